-- Earlier service orders of an order (`search_key = $1 ORDER BY id DESC`, on every submit),
-- read in index order without a sort.
DROP INDEX instances_search_key;
CREATE INDEX instances_search_key_id ON instances (search_key, id);
