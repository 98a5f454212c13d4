-- Comity schema, part 5: job events without foreign keys.
--
-- Events are written only by the store, in the same statement or transaction that creates or changes the job and
-- the attempt they name, and jobs and attempts are never deleted. Their two foreign keys cost a lookup and a row
-- lock per event on every placement, start and end: about 15% of a scheduling pass that places 2,000 jobs
-- (docs/performance.md). The index on (job_id, id) stays; the attempt's own foreign keys stay.
alter table job_events drop constraint job_events_job_id_fkey;
alter table job_events drop constraint job_events_attempt_id_fkey;
