-- Earlier service orders of an order (`search_key = ? ORDER BY id DESC`, on every submit):
-- without the id in the index SQLite preferred (business_line, created_at) and read every
-- instance of the business line.
DROP INDEX instances_search_key;
CREATE INDEX instances_search_key_id ON instances (search_key, id);
