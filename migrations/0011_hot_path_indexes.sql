-- Comity schema, part 11: indexes on the agents' hot path (docs/performance.md).
--
-- `jobs_active` (jobs by state, for assigned and running jobs) served no query that needed it, but after a burst of
-- placements, before ANALYZE, PostgreSQL chose it to find one job among all assigned ones: the pull and the start
-- read every assigned job instead of one row of `jobs_pkey`. Every placement, start and end also had to update it.
drop index jobs_active;

-- The jobs and attempts tables churn (every job is inserted, updated three times and finished within seconds under
-- load): analyze and vacuum them after a fixed number of changed rows rather than a fraction of a growing table,
-- so the planner's picture and the indexes stay close to the truth.
alter table jobs set (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
                      autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_threshold = 5000);
alter table attempts set (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
                          autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_threshold = 5000);

-- Attempts without foreign keys, as job events since migration 0005. Attempts are written only by the store: the
-- scheduling pass inserts them for jobs it has just locked, on hosts it has just read, and nothing deletes jobs,
-- hosts or attempts. Their keys cost a locking lookup per key per row on every placement (three per placement with
-- jobs.current_attempt; docs/performance.md, round 3). The residency trigger, the last line of defence for where data
-- may go, stays.
alter table attempts drop constraint attempts_job_id_fkey;
alter table attempts drop constraint attempts_host_id_fkey;
alter table jobs drop constraint jobs_current_attempt_fkey;
