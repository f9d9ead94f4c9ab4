-- Version 10: reserved for a change made alongside; replaced by it on merge.
SELECT 1;
