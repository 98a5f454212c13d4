-- Table of the pgbench ceiling (ops/bench.d/update-returning.sql): 10,000 rows, primary key on id.
drop table if exists bench_counter;
create table bench_counter (id integer primary key, n bigint not null default 0, touched_at timestamptz);
insert into bench_counter (id) select generate_series(1, 10000);
vacuum analyze bench_counter;
