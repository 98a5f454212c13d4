-- Comity schema, part 13: a generation of the pool, so that a scheduling pass reads the live hosts only when
-- something it reads of them changed (docs/performance.md). It moves when a host joins, changes state (a heartbeat
-- after `down`, the reaper marking it down, draining) or changes its inventory (`inventory_version`, part 12). A
-- plain heartbeat moves nothing.
--
-- The generation is the sum of 64 counters, each host moving the one of its id modulo 64: hosts that change at
-- once (enrollments, a pool's heartbeats after an outage) rarely wait for each other's commit on one row. A counter
-- moves inside the change's own transaction, so the sum moves exactly when a change commits, whatever the order of
-- the commits.
create table pool_state (
    stripe     integer primary key check (stripe between 0 and 63),
    generation bigint not null
);
insert into pool_state select s, 0 from generate_series(0, 63) s;

create function pool_generation() returns trigger language plpgsql as $$
begin
    update pool_state set generation = generation + 1 where stripe = new.id % 64;
    return null;
end $$;
create trigger hosts_pool_generation_insert after insert on hosts for each row execute function pool_generation();
create trigger hosts_pool_generation_update after update on hosts for each row
    when (old.state is distinct from new.state or old.inventory_version is distinct from new.inventory_version)
    execute function pool_generation();
