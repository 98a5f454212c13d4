-- Comity schema, part 12: a version of each host's inventory, so the scheduling pass can keep the pool it decoded
-- (docs/performance.md). The version moves whenever anything the pass reads of a host changes; heartbeats, which
-- only move `last_heartbeat` (and `state` back to active), leave it alone.
alter table hosts add column inventory_version bigint not null default 1;

create function hosts_inventory_version() returns trigger language plpgsql as $$
begin
    new.inventory_version := old.inventory_version + 1;
    return new;
end $$;
create trigger hosts_inventory_version before update on hosts for each row
    when ((old.cpu_millis, old.memory_bytes, old.gpus, old.labels, old.runner, old.region, old.partner_id, old.name)
          is distinct from (new.cpu_millis, new.memory_bytes, new.gpus, new.labels, new.runner, new.region, new.partner_id, new.name))
    execute function hosts_inventory_version();
