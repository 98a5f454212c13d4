-- Comity schema, part 10: the audit ledger's sequencer (docs/audit.md, "Appending").
--
-- Until now `audit_append` chained each entry inside the change's transaction under an advisory lock held until
-- commit, so every appending transaction (each start, end and pass) committed after the previous one had flushed
-- its WAL: one fsync after another, never a group commit. Now the change's transaction inserts its entries into
-- `audit_pending` (still the same transaction: no change without its entry, no entry without its change), and the
-- server's sequencer (Store.chainAudit) moves committed entries into the hash chain, in the order they were
-- appended, under the ledger's lock, in the background and before every read of the ledger.

create table audit_pending (
    id         bigserial primary key,
    at_us      bigint not null,
    kind       text not null,
    actor      text not null,
    job_id     bigint,
    host_id    bigint,
    partners   text[] not null,
    region     text not null,
    datasets   text[] not null,
    policy     text not null,
    body       text not null
);
-- A queue: rows live for milliseconds. Vacuum it often so the chainer's scans stay short.
alter table audit_pending set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                               autovacuum_vacuum_cost_delay = 0);

-- Appends entries in order: same arguments and result as before, without the lock.
create or replace function audit_append(
    kinds text[], actors text[], jobs bigint[], hosts bigint[], partner_lists text[], regions text[], dataset_lists text[],
    policies text[], bodies text[]
) returns bigint language plpgsql as $$
declare
    n integer := coalesce(array_length(kinds, 1), 0);
begin
    if n = 0 then
        return 0;
    end if;
    -- Lists travel as comma-separated text (names never contain commas); `with ordinality` keeps the given order.
    insert into audit_pending (at_us, kind, actor, job_id, host_id, partners, region, datasets, policy, body)
    select (extract(epoch from clock_timestamp()) * 1000000)::bigint, e.kind, coalesce(e.actor, ''), e.job, e.host,
           coalesce(string_to_array(nullif(e.partners, ''), ','), '{}'), coalesce(e.region, ''),
           coalesce(string_to_array(nullif(e.datasets, ''), ','), '{}'), coalesce(e.policy, ''), coalesce(e.body, '{}')
    from unnest(kinds, actors, jobs, hosts, partner_lists, regions, dataset_lists, policies, bodies)
         with ordinality as e(kind, actor, job, host, partners, region, datasets, policy, body, i)
    order by e.i;
    return n;
end $$;
