-- Comity schema, part 14: lease renewals as HOT updates (docs/performance.md, "Round 5").
--
-- A heartbeat renews the leases of its host's attempts. While `lease_expires_at` was indexed (`attempts_lease`),
-- every renewal wrote a new tuple and a new entry in each of the table's indexes, so the indexes filled with entries
-- of dead versions until autovacuum came. The pass's usage aggregation then read them through a bitmap scan, which
-- never marks them dead: after 50,000 jobs it visited 132,830 index entries and 1,851 heap blocks to find no active
-- attempt (10 ms a pass). Without the index, a renewal changes no indexed column and can stay on its page (HOT),
-- for which the table keeps a fifth of each page free.
--
-- The reaper finds expired leases among the active attempts (`attempts_active`), once a second.
drop index attempts_lease;
alter table attempts set (fillfactor = 80);
