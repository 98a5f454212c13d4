-- Agent runtimes (issue 7): how each host runs jobs.
--
-- hosts.runtime: the agent's report (runner, runners available, cgroups, notes), as the wire's HostRuntime JSON;
-- null for agents older than runners, which are treated as plain process runners without limits.
-- hosts.runner: the configured runner, copied out of runtime so the scheduler reads a column (sandbox eligibility).
alter table hosts add column runtime jsonb;
alter table hosts add column runner text not null default 'process'
    check (runner in ('process', 'sandbox', 'slurm', 'container'));
