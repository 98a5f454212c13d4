import ArgumentParser
import ComityAPI
import ComityCore
import ComityStore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// `comity-bench scale`: the scheduling pass's cost against queue depth and pool size, straight on the database.
struct ScaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale",
        abstract: "Scheduling pass time against queue depth × hosts, on a database filled directly (server stopped).",
        discussion: """
            Applies the migrations, fills the database with set-based inserts (hosts with a fresh heartbeat and their \
            GPUs; queued jobs whose spec is exactly what Store.submit writes: 90% 1 CPU/1Gi, 5% 1×H100, 5% \
            2×A100 40Gi), grows the queue in ascending order, and for each queued × hosts size runs \
            Store.schedulingPass() --repeats times after one warm-up pass (median reported; a size whose pass \
            takes over 3 s is measured twice and one over 6 s once, the warm-up counted), with only that many hosts active (the others draining). Between passes the attempts are deleted, their jobs requeued and \
            the tables vacuumed, so every pass sees the same queue and free capacity. Also reports where the \
            measured passes spent their time (Store.timedSchedulingPass: queue head, contexts, usage and hosts, fair \
            share and placer, write, reclaims; commit is the rest) and, with --plans, writes EXPLAIN (ANALYZE, BUFFERS) \
            of the hot queries at the largest size.

            Leaves the database with the largest queue requeued and every host active with a fresh heartbeat, ready \
            for a server to be started on it.
            """
    )

    @Option(help: "PostgreSQL URL of a database for this phase (its tables are filled and changed).")
    var databaseURL: String

    @Option(help: "Queue depths, ascending.")
    var queued: String = "1000,10000,100000,1000000"

    @Option(help: "Active host counts.")
    var hosts: String = "100,1000,10000"

    @Option(help: "Measured passes per size (the median is reported).")
    var repeats: Int = 3

    @Option(help: "Leave out the larger queue sizes when the phase would run past this many seconds (named in the notes).")
    var budget: Int = 480

    @Option(help: "Write EXPLAIN (ANALYZE, BUFFERS) of the hot queries at the largest size to this file.")
    var plans: String?

    @Option(help: "Write the results here (JSON) instead of standard output.")
    var out: String?

    @Option(help: "The PostgreSQL postmaster's pid: other processes' share of the CPU during each size is reported.")
    var postmasterPid: Int32?

    /// A pass slower than this is measured fewer times (see the notes), so that the phase fits its budget.
    static let slowPassMs = 3_000.0

    func run() async throws {
        let logger = BenchLogging.logger("comity.bench.scale")
        let queueSizes = try parseIntegerList(queued, option: "--queued").sorted()
        let hostCounts = try parseIntegerList(hosts, option: "--hosts").sorted()
        let url = try DatabaseURL(databaseURL)
        let began = Ticks.now()
        let budget = self.budget
        let repeats = self.repeats
        let plans = self.plans
        let postmasterPid = self.postmasterPid
        var results = try await PostgresClient.with(try url.clientConfiguration(maxConnections: 4), logger: logger) { client in
            var results = Results()
            try await Migrator(logger: logger).migrate(client)
            let db = ScaleDatabase(client: client, logger: logger)
            let ids = try await db.federation()
            try await db.ensureHosts(hostCounts.last!)
            let store = Store(client: client, logger: logger)

            var passMs: [String: JSONValue] = [:]
            var passMin: [String: JSONValue] = [:]
            var passMax: [String: JSONValue] = [:]
            var placed: [String: JSONValue] = [:]
            var examined: [String: JSONValue] = [:]
            var rates: [String: JSONValue] = [:]
            var breakdowns: [String: JSONValue] = [:]
            var otherLoad: [String: JSONValue] = [:]
            var lastKey = ""
            var current = try await db.queuedCount()
            var insertRate = 30_000.0  // rows per second, until measured
            var lastSizeSeconds = 0.0
            for size in queueSizes {
                let elapsed = Ticks.seconds(from: began, to: Ticks.now())
                let estimate = lastSizeSeconds * 1.2 + Double(max(0, size - current)) / insertRate
                if elapsed + estimate > Double(budget) {
                    results.note(
                        "scale: left out \(size) queued jobs and larger: the phase would run past its budget of \(budget) s (at \(Int(elapsed)) s, about \(Int(estimate)) s more)")
                    break
                }
                if size > current {
                    let t = Ticks.now()
                    try await db.addJobs(from: current, to: size, ids: ids)
                    let seconds = Ticks.seconds(from: t, to: Ticks.now())
                    insertRate = Double(size - current) / max(seconds, 0.001)
                    say("scale: queue at \(size) jobs (inserted \(size - current) in \(String(format: "%.1f", seconds)) s)")
                    current = size
                }
                let sizeStart = Ticks.now()
                for hostCount in hostCounts {
                    let key = "\(size)x\(hostCount)"
                    try await db.activate(hostCount)
                    try await db.requeue()
                    let cpuStart = CPUSample.take(serverPID: nil, postmasterPID: postmasterPid)
                    // A warm-up pass, not counted, unless passes are so slow (seconds) that caches do not matter.
                    let warmStart = Ticks.now()
                    var result = try await store.schedulingPass()
                    let warmMs = Ticks.signedMilliseconds(from: warmStart, to: Ticks.now())
                    var times: [Double] = []
                    var runs = repeats
                    if warmMs > 2 * Self.slowPassMs {
                        times.append(warmMs)
                        runs = 0
                        results.note("scale: \(key) measured once (the warm-up pass counted): one pass takes \(Int(warmMs / 1000)) s")
                    } else if warmMs > Self.slowPassMs {
                        times.append(warmMs)
                        runs = 1
                        results.note("scale: \(key) measured twice (the warm-up pass counted): one pass takes \(Int(warmMs / 1000)) s")
                    }
                    var samples: [String: [Double]] = [:]
                    for _ in 0..<runs {
                        try await db.requeue()
                        try await db.refreshHeartbeats()
                        let t = Ticks.now()
                        let timed = try await store.timedSchedulingPass()
                        times.append(Ticks.signedMilliseconds(from: t, to: Ticks.now()))
                        result = timed.result
                        for (part, ms) in timed.parts { samples[part, default: []].append(ms) }
                    }
                    try await db.requeue()
                    try await db.refreshHeartbeats()
                    let cpuEnd = CPUSample.take(serverPID: nil, postmasterPID: postmasterPid)
                    let p = Percentiles(times)
                    let median = times.count == 2 ? (times[0] + times[1]) / 2 : p.median
                    let breakdown = samples.mapValues { Percentiles($0).median }
                    passMs[key] = .number(round1(median))
                    passMin[key] = .number(round1(p.sorted.first!))
                    passMax[key] = .number(round1(p.max))
                    placed[key] = .number(Double(result.placed))
                    examined[key] = .number(Double(result.examined))
                    let rate = Double(result.placed) / (median / 1000)
                    rates[key] = .number(rate.rounded())
                    // The commit is one of the parts; what is left is the begin and the wake-up after the commit.
                    var parts = breakdown.mapValues { JSONValue.number(round1($0)) }
                    let rest = max(0, median - breakdown.filter { $0.key != "rule_evaluations" }.values.reduce(0, +))
                    parts["other"] = .number(round1(rest))
                    breakdowns[key] = .object(parts)
                    if case .object(let cpu) = CPUSample.report(from: cpuStart, to: cpuEnd),
                        case .number(let other)? = cpu["other_cpu_s"], case .number(let capacity)? = cpu["machine_cpu_capacity_s"], capacity > 0
                    {
                        otherLoad[key] = .number((other / capacity * 1000).rounded() / 10)
                    }
                    lastKey = key
                    say(
                        "scale: \(key): pass \(String(format: "%.1f", median)) ms (min \(String(format: "%.1f", p.sorted.first!)), max \(String(format: "%.1f", p.max))), examined \(result.examined), hosts \(result.hosts), placed \(result.placed), \(Int(rate)) placements/s; "
                            + parts.sorted { $0.key < $1.key }.map { "\($0.key) \(numberText($0.value))" }.joined(separator: ", "))
                }
                lastSizeSeconds = Ticks.seconds(from: sizeStart, to: Ticks.now())
            }
            results["pass_ms"] = .object(passMs)
            results["pass_ms_min"] = .object(passMin)
            results["pass_ms_max"] = .object(passMax)
            results["pass_placed"] = .object(placed)
            results["pass_examined"] = .object(examined)
            results["pass_placements_per_s"] = .object(rates)
            results["pass_breakdown_ms"] = .object(breakdowns)
            results["pass_other_load_pct"] = .object(otherLoad)
            let headline = rates["100000x10000"] != nil ? "100000x10000" : lastKey
            if case .number(let rate)? = rates[headline] {
                results.set("placements_per_s_in_pass", rate, digits: 0)
                results.set("placements_per_s_in_pass_at", headline)
            }
            if let plans, !lastKey.isEmpty {
                do {
                    let text = try await db.explainHotQueries(store: store, label: lastKey)
                    try text.write(toFile: plans, atomically: true, encoding: .utf8)
                    say("scale: query plans at \(lastKey) written to \(plans)")
                } catch {
                    results.note("scale: the query plans could not be taken: \(String(reflecting: error))")
                }
            }
            // Ready for a server: the whole pool active, the largest queue requeued.
            try await db.activate(hostCounts.last!)
            try await db.requeue()
            return results
        }
        results.set("scale_seconds", Ticks.seconds(from: began, to: Ticks.now()), digits: 1)
        try results.write(to: out)
    }
}

func round1(_ value: Double) -> Double { (value * 10).rounded() / 10 }

func numberText(_ value: JSONValue) -> String {
    if case .number(let number) = value { return String(format: "%.1f", number) }
    return "?"
}

/// The scale phase's direct SQL.
struct ScaleDatabase {
    let client: PostgresClient
    let logger: Logger

    struct IDs {
        var project: Int64
        var partner: Int64
        var principal: Int64
    }

    /// Jurisdictions, regions, partners, the project and a researcher principal (not an admin: a server started on
    /// this database later creates its own first admin and writes its token).
    func federation() async throws -> IDs {
        try await client.query(
            """
            insert into jurisdictions (code, parent) values ('EU', null), ('DE', 'EU'), ('FR', 'EU'), ('KE', null), ('IN', null)
            on conflict do nothing
            """, logger: logger)
        try await client.query(
            """
            insert into regions (name, jurisdiction) values ('eu-de-1', 'DE'), ('eu-fr-1', 'FR'), ('ke-nbo-1', 'KE'), ('in-blr-1', 'IN')
            on conflict do nothing
            """, logger: logger)
        try await client.query(
            """
            insert into partners (name, jurisdiction) values ('tum', 'DE'), ('inria', 'FR'), ('uon', 'KE'), ('iisc', 'IN')
            on conflict do nothing
            """, logger: logger)
        try await client.query(
            """
            insert into projects (name, partner_id) select 'bench', id from partners where name = 'tum'
            on conflict do nothing
            """, logger: logger)
        // The other partners lend their hosts to every guest (without a donation policy a partner takes none), so
        // every pass evaluates the sovereignty rules for guests as it would in a real federation.
        try await client.query(
            """
            insert into policies (kind, name, version, document, effective_from, reason)
            select 'donor-policy', p, 1, jsonb_build_object('kind', 'donor-policy', 'name', p, 'permit', jsonb_build_array(jsonb_build_object('id', 'everyone'))),
                   now(), 'benchmark'
            from unnest(array['inria', 'uon', 'iisc']) as p
            on conflict do nothing
            """, logger: logger)
        let (project, partner) = try await client.query("select id, partner_id from projects where name = 'bench'", logger: logger)
            .decode((Int64, Int64).self).collect().first!
        var principal = try await client.query(
            "select id from principals where name = 'bench-scale' order by id limit 1", logger: logger
        ).decode(Int64.self).collect().first
        if principal == nil {
            principal = try await client.query(
                """
                insert into principals (name, role, partner_id, project_id) values ('bench-scale', 'researcher', null, \(project))
                returning id
                """, logger: logger
            ).decode(Int64.self).collect().first
        }
        return IDs(project: project, partner: partner, principal: principal!)
    }

    /// Hosts numbered 0..<count (1/4 8×H100 80Gi, 1/4 4×A100 40Gi, 1/2 CPU-only, spread over the regions), as
    /// `Store.enroll` writes them; all start draining.
    func ensureHosts(_ count: Int) async throws {
        let existing = try await client.query("select count(*) from hosts where name like 'scale-%'", logger: logger)
            .decode(Int64.self).collect().first ?? 0
        guard existing < count else { return }
        try await client.query(
            """
            insert into hosts (name, partner_id, region, state, cpu_millis, memory_bytes, gpus, agent_version, last_heartbeat)
            select 'scale-' || lpad(i::text, 6, '0'), p.id, s.region, 'draining',
                   case i % 4 when 0 then 128000 else 64000 end,
                   case i % 4 when 0 then 1024::bigint << 30 when 1 then 512::bigint << 30 else 256::bigint << 30 end,
                   case i % 4
                     when 0 then (select jsonb_agg(jsonb_build_object('index', g, 'uuid', 'GPU-scale-' || i || '-' || g,
                                    'model', 'NVIDIA H100 80GB HBM3', 'memory_bytes', 80::bigint << 30) order by g)
                                  from generate_series(0, 7) g)
                     when 1 then (select jsonb_agg(jsonb_build_object('index', g, 'uuid', 'GPU-scale-' || i || '-' || g,
                                    'model', 'NVIDIA A100-SXM4-40GB', 'memory_bytes', 40::bigint << 30) order by g)
                                  from generate_series(0, 3) g)
                     else '[]'::jsonb
                   end,
                   'comity-bench', now()
            from generate_series(\(existing), \(Int64(count - 1))) i
            join (values (0, 'eu-de-1', 'tum'), (1, 'eu-fr-1', 'inria'), (2, 'ke-nbo-1', 'uon'), (3, 'in-blr-1', 'iisc'))
                 as s(k, region, partner) on s.k = (i / 4) % 4
            join partners p on p.name = s.partner
            order by i
            """, logger: logger)
        try await client.query("vacuum analyze hosts", logger: logger)
    }

    func queuedCount() async throws -> Int {
        Int(try await client.query("select count(*) from jobs", logger: logger).decode(Int64.self).collect().first ?? 0)
    }

    /// The three job specs of the mix, encoded exactly as `Store.submit` encodes a validated spec.
    static func specDocuments() throws -> [String] {
        let gib: Int64 = 1 << 30
        let specs = [
            JobSpec(name: "scale-cpu", project: "bench", command: ["true"], resources: ResourceRequest(cpuMillis: 1000, memoryBytes: gib)),
            JobSpec(
                name: "scale-h100", project: "bench", command: ["true"],
                resources: ResourceRequest(cpuMillis: 8000, memoryBytes: 64 * gib, gpus: 1, gpuModel: "H100")),
            JobSpec(
                name: "scale-a100", project: "bench", command: ["true"],
                resources: ResourceRequest(cpuMillis: 8000, memoryBytes: 64 * gib, gpus: 2, gpuModel: "A100", gpuMemoryBytes: 40 * gib)),
        ]
        let encoder = WireJSON.encoder()
        return try specs.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
    }

    /// Appends queued jobs numbered `from..<to` (job i: i % 20 == 0 H100, == 10 A100, else CPU), in batches.
    func addJobs(from: Int, to: Int, ids: IDs) async throws {
        let documents = try Self.specDocuments()
        let kinds: [Int32] = [0, 1, 2]
        var low = from
        while low < to {
            let high = min(to, low + 100_000)
            try await client.query(
                """
                with s as (
                    select k, doc::jsonb as d from unnest(\(kinds)::int[], \(documents)::text[]) as t(k, doc)
                )
                insert into jobs (project_id, partner_id, submitted_by, name, kind, spec, priority, cpu_millis, memory_bytes,
                                  gpus, gpu_model, gpu_memory_bytes, retries)
                select \(ids.project), \(ids.partner), \(ids.principal), d->>'name', d->>'kind', d, (d->>'priority')::int,
                       (d->'resources'->>'cpu_millis')::int, (d->'resources'->>'memory_bytes')::bigint,
                       (d->'resources'->>'gpus')::int, d->'resources'->>'gpu_model',
                       (d->'resources'->>'gpu_memory_bytes')::bigint, (d->>'retries')::int
                from generate_series(\(Int64(low)), \(Int64(high - 1))) i
                join s on s.k = case i % 20 when 0 then 1 when 10 then 2 else 0 end
                order by i
                """, logger: logger)
            low = high
        }
        try await client.query("vacuum analyze jobs", logger: logger)
    }

    /// The first `count` hosts (by id) active with a fresh heartbeat, the rest draining.
    func activate(_ count: Int) async throws {
        try await client.query(
            """
            update hosts set state = case when id in (select id from hosts order by id limit \(Int64(count))) then 'active' else 'draining' end,
                last_heartbeat = now()
            """, logger: logger)
        try await client.query("vacuum analyze hosts", logger: logger)
    }

    /// Keeps active hosts' heartbeats fresh (the pass ignores hosts silent for 30 s).
    func refreshHeartbeats() async throws {
        try await client.query(
            "update hosts set last_heartbeat = now() where state = 'active' and last_heartbeat < now() - interval '10 seconds'",
            logger: logger)
    }

    /// Undoes what passes did: attempts and their events deleted, their jobs queued again; then vacuums.
    func requeue() async throws {
        try await client.withTransaction(logger: logger) { connection in
            // Without foreign-key triggers for these deletes: jobs.current_attempt has no index, so checking each
            // deleted attempt against jobs would scan the whole jobs table (the references are cleared first).
            try await connection.query("set local session_replication_role = replica", logger: logger)
            try await connection.query(
                "update jobs set state = 'queued', current_attempt = null, attempts = 0 where state <> 'queued'", logger: logger)
            try await connection.query("delete from job_events", logger: logger)
            try await connection.query("delete from attempts", logger: logger)
        }
        try await client.query("vacuum jobs, attempts, job_events, hosts", logger: logger)
    }

    // MARK: Where a pass spends its time

    // The pass's queries, as the store runs them.
    static let headQuery = Store.queuedHeadQuery(limit: Store.Configuration().passHeadLimit)
    static let usageQuery = Store.activeHoldingsSQL
    static let hostsQuery = Store.liveHostsQuery(timeoutSeconds: Store.Configuration().hostTimeoutSeconds)

    // MARK: Plans

    /// EXPLAIN (ANALYZE, BUFFERS) of the pass's queue-head select, its usage aggregation and host select, and the
    /// agents' assignments fetch, start and heartbeat renewal, each in a transaction that is rolled back. All but the
    /// first are taken after one real pass, so that there are active attempts to aggregate, fetch, start and renew.
    func explainHotQueries(store: Store, label: String) async throws -> String {
        try await requeue()
        try await refreshHeartbeats()
        var text = "EXPLAIN (ANALYZE, BUFFERS) at \(label) (queued x active hosts), PostgreSQL \(try await serverVersion())\n"
        text += try await explain("queue head (Store.schedulingPass), queue fully requeued", Self.headQuery)
        let pass = try await store.schedulingPass()
        text += "\n-- one scheduling pass placed \(pass.placed) of \(pass.examined) examined on \(pass.hosts) hosts.\n"
        text += "-- [A] the agents' queries right after the pass, with the statistics the burst left (no ANALYZE yet):\n"
        text += try await explainAgentQueries()
        try await client.query("analyze jobs, attempts, hosts", logger: logger)
        text += "\n-- [B] after ANALYZE jobs, attempts, hosts (as autovacuum would do some time after a burst):\n"
        text += try await explain("queue head (Store.schedulingPass), after one pass", Self.headQuery)
        text += try await explain("active-attempt aggregation (Store.availableHosts)", Self.usageQuery)
        text += try await explain("live hosts and their inventory versions (Store.availableHosts; the pool is rebuilt only when they change)", Self.hostsQuery)
        text += try await explainAgentQueries()
        let sizes = try await client.query(
            """
            select relname, pg_size_pretty(pg_total_relation_size(oid)), reltuples::bigint from pg_class
            where relname in ('jobs', 'attempts', 'hosts', 'job_events', 'jobs_queue', 'jobs_pkey', 'attempts_active')
            order by relname
            """, logger: logger
        ).decode((String, String, Int64).self).collect()
        text += "\n-- relation sizes: " + sizes.map { "\($0.0) \($0.1) (~\($0.2) rows)" }.joined(separator: "; ") + "\n"
        try await requeue()
        return text
    }

    /// The agent side after a pass: assignments fetch, start and heartbeat renewal of the busiest host.
    func explainAgentQueries() async throws -> String {
        var text = ""
        let (host, attempt) = try await client.query(
            """
            select host_id, min(id) from attempts where state = 'assigned'
            group by host_id order by count(*) desc, host_id limit 1
            """, logger: logger
        ).decode((Int64, Int64).self).collect().first ?? (Int64(1), Int64(1))
        let held = try await client.query(
            "select coalesce(array_agg(id order by id), '{}') from attempts where host_id = \(host) and state in ('assigned', 'running')",
            logger: logger
        ).decode([Int64].self).collect().first ?? []
        // The store's own statements (their values are bound as the server binds them).
        text += try await explain(
            "assignments fetch (Store.assignments) for host \(host), the host with most assignments", Store.assignmentsQuery(host: host))
        text += try await explain(
            "agent start (Store.start, a batch of one) of attempt \(attempt) on host \(host)",
            Store.startQuery(attempts: [attempt], hosts: [host], leaseSeconds: 30))
        text += try await explain(
            "heartbeat (Store.heartbeat) of host \(host) with its \(held.count) attempts",
            Store.heartbeatQuery(host: host, attempts: held, leaseSeconds: 30, resourcesChanged: false))
        return text
    }

    func serverVersion() async throws -> String {
        try await client.query("show server_version", logger: logger).decode(String.self).collect().first ?? "?"
    }

    func explain(_ title: String, _ sql: String) async throws -> String {
        try await explain(title, PostgresQuery(unsafeSQL: sql))
    }

    func explain(_ title: String, _ query: PostgresQuery) async throws -> String {
        try await client.withConnection { connection in
            try await connection.query("begin", logger: logger)
            var text = "\n-- \(title)\n" + query.sql.split(separator: "\n").map { "-- " + $0 }.joined(separator: "\n") + "\n"
            do {
                for try await line in try await connection.query(
                    PostgresQuery(unsafeSQL: "explain (analyze, buffers) " + query.sql, binds: query.binds), logger: logger
                ).decode(String.self) {
                    text += line + "\n"
                }
            } catch {
                _ = try? await connection.query("rollback", logger: logger)
                throw error
            }
            try await connection.query("rollback", logger: logger)
            return text
        }
    }
}
