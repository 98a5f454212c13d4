-- Comity schema, part 3: the audit ledger. One append-only, hash-chained log of every decision, written in the same
-- transaction as the change it records (docs/audit.md defines the canonical encoding and the hashes).

create table audit_log (
    seq        bigint primary key check (seq > 0),
    -- Microseconds since the Unix epoch: the hashed form of the time; `at` is derived from it for queries.
    at_us      bigint not null,
    at         timestamptz generated always as (to_timestamp(at_us::double precision / 1000000)) stored,
    kind       text not null,
    actor      text not null default '',
    job_id     bigint,
    host_id    bigint,
    -- Partners the entry concerns (the job's and the host's), the host's region, the datasets the job reads.
    partners   text[] not null default '{}',
    region     text not null default '',
    datasets   text[] not null default '{}',
    -- The rules in force (ActivePolicies id) when the decision was made.
    policy     text not null default '',
    -- JSON text, hashed exactly as stored.
    body       text not null default '{}',
    leaf       bytea not null check (octet_length(leaf) = 32),
    hash       bytea not null check (octet_length(hash) = 32)
);
-- Every index costs each append, inside the ledger's lock: only those the auditor's filters need most. Time
-- grows with seq, so a BRIN index serves --since/--until for a fraction of a B-tree's cost; kind, region and dataset
-- filters scan in seq order.
create index audit_log_job on audit_log (job_id, seq) where job_id is not null;
create index audit_log_host on audit_log (host_id, seq) where host_id is not null;
create index audit_log_at on audit_log using brin (at);
create index audit_log_partners on audit_log using gin (partners);

-- The canonical encoding of an entry's content (every column but the hashes and the derived time).
create function audit_canonical(
    seq bigint, at_us bigint, kind text, actor text, job_id bigint, host_id bigint, partners text[], region text,
    datasets text[], policy text, body text
) returns text language sql immutable as $$
    select 'comity-audit-v1'
        || E'\nseq=' || seq
        || E'\nat_us=' || at_us
        || E'\nkind=' || octet_length(kind) || ':' || kind
        || E'\nactor=' || octet_length(actor) || ':' || actor
        || E'\njob=' || coalesce(job_id::text, '')
        || E'\nhost=' || coalesce(host_id::text, '')
        || E'\npartners=' || octet_length(array_to_string(partners, ',')) || ':' || array_to_string(partners, ',')
        || E'\nregion=' || octet_length(region) || ':' || region
        || E'\ndatasets=' || octet_length(array_to_string(datasets, ',')) || ':' || array_to_string(datasets, ',')
        || E'\npolicy=' || octet_length(policy) || ':' || policy
        || E'\nbody=' || octet_length(body) || ':' || body
$$;

-- Appends entries in order. Appends of all transactions are serialized by a transaction-scoped advisory lock, so
-- the chain never forks; the entries commit or roll back with the change they record.
create function audit_append(
    kinds text[], actors text[], jobs bigint[], hosts bigint[], partner_lists text[], regions text[], dataset_lists text[],
    policies text[], bodies text[]
) returns bigint language plpgsql as $$
declare
    last_seq bigint;
    last_hash bytea;
    now_us bigint;
    n integer := coalesce(array_length(kinds, 1), 0);
    i integer;
    entry_leaf bytea;
    seqs bigint[] := '{}';
    leaves bytea[] := '{}';
    hashes bytea[] := '{}';
    all_partners text[] := '{}';
    all_datasets text[] := '{}';
begin
    if n = 0 then
        return 0;
    end if;
    perform pg_advisory_xact_lock(7236996542101);
    select seq, hash into last_seq, last_hash from audit_log order by seq desc limit 1;
    last_seq := coalesce(last_seq, 0);
    last_hash := coalesce(last_hash, decode(repeat('00', 32), 'hex'));
    now_us := (extract(epoch from clock_timestamp()) * 1000000)::bigint;
    for i in 1 .. n loop
        last_seq := last_seq + 1;
        -- Lists travel as comma-separated text (names never contain commas).
        entry_leaf := sha256('\x00'::bytea || convert_to(audit_canonical(
            last_seq, now_us, kinds[i], coalesce(actors[i], ''), jobs[i], hosts[i],
            coalesce(string_to_array(nullif(partner_lists[i], ''), ','), '{}'), coalesce(regions[i], ''),
            coalesce(string_to_array(nullif(dataset_lists[i], ''), ','), '{}'), coalesce(policies[i], ''), coalesce(bodies[i], '{}')), 'UTF8'));
        last_hash := sha256('\x01'::bytea || last_hash || entry_leaf);
        seqs := seqs || last_seq;
        leaves := leaves || entry_leaf;
        hashes := hashes || last_hash;
    end loop;
    -- One insert for the whole batch (a pass appends thousands).
    insert into audit_log (seq, at_us, kind, actor, job_id, host_id, partners, region, datasets, policy, body, leaf, hash)
    select e.seq, now_us, e.kind, coalesce(e.actor, ''), e.job, e.host,
           coalesce(string_to_array(nullif(e.partners, ''), ','), '{}'), coalesce(e.region, ''),
           coalesce(string_to_array(nullif(e.datasets, ''), ','), '{}'), coalesce(e.policy, ''), coalesce(e.body, '{}'), e.leaf, e.hash
    from unnest(seqs, kinds, actors, jobs, hosts, partner_lists, regions, dataset_lists, policies, bodies, leaves, hashes)
         as e(seq, kind, actor, job, host, partners, region, datasets, policy, body, leaf, hash);
    return n;
end $$;

-- One entry.
create function audit_append1(
    kind text, actor text, job_id bigint, host_id bigint, partners text, region text, datasets text, policy text, body text
) returns bigint language sql as $$
    select audit_append(array[kind], array[actor], array[job_id], array[host_id], array[partners], array[region],
                        array[datasets], array[policy], array[body])
$$;

-- Nobody changes history: triggers refuse UPDATE, DELETE and TRUNCATE (for every role, superusers included, unless
-- they disable triggers); below, privileges keep the application's role from doing even that.
create function audit_log_immutable() returns trigger language plpgsql as $$
begin
    raise exception 'the audit ledger is append-only (% refused)', tg_op using errcode = '55000';
end $$;
create trigger audit_log_no_update_delete before update or delete on audit_log
    for each row execute function audit_log_immutable();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_immutable();

-- Signed checkpoints of the ledger head (C2SP tlog-checkpoint text, see docs/audit.md).
create table audit_checkpoints (
    size        bigint primary key check (size >= 0),
    root        bytea not null check (octet_length(root) = 32),
    at          timestamptz not null default now(),
    text        text not null
);
create trigger audit_checkpoints_no_update_delete before update or delete on audit_checkpoints
    for each row execute function audit_log_immutable();

-- Where the deployment allows it (migrations run as a superuser), the ledger belongs to a separate role that cannot
-- log in, and the migrating role keeps only INSERT and SELECT on it. A server that connects as a role without
-- superuser rights (docs/audit.md) can then neither change rows nor disable the triggers: only an owner or a
-- superuser can.
do $$
begin
    if exists (select 1 from pg_roles where rolname = current_user and rolsuper) then
        -- Roles belong to the whole cluster: databases migrated at the same time may both try to create it.
        begin
            create role comity_audit_owner nologin;
        exception when duplicate_object or unique_violation then
            null;
        end;
        execute format('grant select, insert on audit_log, audit_checkpoints to %I', current_user);
        alter table audit_log owner to comity_audit_owner;
        alter table audit_checkpoints owner to comity_audit_owner;
    end if;
    revoke update, delete, truncate on audit_log, audit_checkpoints from public;
end $$;
