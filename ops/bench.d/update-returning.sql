-- pgbench script of ops/bench: the database's ceiling for one-row write transactions.
-- One single-row UPDATE … RETURNING per transaction on a random row of a 10,000-row table (bench_counter,
-- created by ops/bench.d/setup.sql), as a job claim or a job completion would be at its simplest.
\set id random(1, 10000)
UPDATE bench_counter SET n = n + 1, touched_at = now() WHERE id = :id RETURNING n;
