-- Version 8: kept for a change made beside this one (no schema change).
SELECT 1;
