-- Comity schema, part 16: statistics of `attempts` follow a burst within one autovacuum round (docs/performance.md,
-- "Round 6").
--
-- The pass's usage aggregation reads the active attempts. While many are active (a full pool), a sequential scan is
-- the right plan; once they ended, the index of active attempts is. The plan follows the statistics, which autovacuum
-- refreshed only after 5,000 changed rows (part 11): after a burst of 100,000 jobs the last refresh could still count
-- thousands of active attempts, and every pass of the idle pool that followed read the whole table (9 ms a pass)
-- until enough new work had changed 5,000 rows. From 1,000 changed rows on, the next autovacuum round (10 s, as the
-- README recommends) analyzes the table: a sample of at most 30,000 rows, a few tens of milliseconds.
alter table attempts set (autovacuum_analyze_threshold = 1000);
