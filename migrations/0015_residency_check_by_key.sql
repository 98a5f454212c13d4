-- Comity schema, part 15: the residency check of inserted attempts looks only at jobs whose data is bound somewhere,
-- and finds each one's host by its key (docs/performance.md, round 6).
--
-- The check of part 2 joined every inserted attempt with `hosts` and `regions` before it filtered on the job's
-- permitted jurisdictions: for a scheduling pass of 2,000 placements on 10,000 hosts, a scan and hash of every host
-- (about 10 ms a pass). A job without bounds needs no host; a bound one needs its host, by the primary key (`offset
-- 0` keeps the lookup per row: flattened into a join, the planner may hash every host again). A host or region that
-- cannot be found now counts as a violation (before, the join dropped the row).
create or replace function attempts_residency_inserted() returns trigger language plpgsql as $$
declare
    bad record;
begin
    select a.job_id, a.host_id, j.permitted_jurisdictions as allowed, coalesce(hr.jurisdiction, '?') as jurisdiction into bad
    from inserted a
    join jobs j on j.id = a.job_id and j.permitted_jurisdictions is not null
    left join lateral (
        select r.jurisdiction from hosts h join regions r on r.name = h.region where h.id = a.host_id offset 0
    ) hr on true
    where hr.jurisdiction is null or not (hr.jurisdiction = any(j.permitted_jurisdictions))
    limit 1;
    if found then
        raise exception 'residency violation: job % may run only in {%}, host % is in %',
            bad.job_id, array_to_string(bad.allowed, ','), bad.host_id, bad.jurisdiction
            using errcode = '23514';
    end if;
    return null;
end $$;
