-- Room on each page for the next version of an instance row, so that a step's commit, which
-- changes no indexed column, is a heap-only update.
ALTER TABLE instances SET (fillfactor = 70);
