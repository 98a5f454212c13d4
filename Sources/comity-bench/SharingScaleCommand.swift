import ArgumentParser
import ComityCore
import ComityStore
import Foundation
import Logging
import PostgresNIO

/// `comity-bench sharing`: the scheduling pass with fair sharing at federation scale.
struct SharingScaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sharing",
        abstract: "Scheduling pass time with fair sharing: many partners, many projects, a deep queue (server stopped).",
        discussion: """
            Fills a database directly: --partners partners (every one lending to every guest), --projects projects \
            spread over them (each with 1 to 3 shares), --hosts hosts (the scale phase's mix) spread over the \
            partners, decayed contribution and usage as accounting would leave them, grants for a tenth of the \
            partners and CPU quotas for a tenth of the projects, and --queued jobs spread over the projects (the \
            scale phase's mix). Then runs Store.schedulingPass() --repeats times after a warm-up, undoing every \
            pass (attempts deleted, jobs requeued, reservations and stops cleared) so each sees the same queue. \
            Reports the median pass time, jobs examined and placed, and how many partners and projects got \
            placements (the pass reaches every project's head, not one partner's). Then fills the pool pass by \
            pass and times one pass that finds it full (where reclaims are planned).
            """
    )

    @Option(help: "PostgreSQL URL of a database for this phase (its tables are filled and changed).")
    var databaseURL: String

    @Option var partners: Int = 100
    @Option var projects: Int = 1_000
    @Option var queued: Int = 100_000
    @Option var hosts: Int = 1_000

    @Option(help: "Measured passes (the median is reported).")
    var repeats: Int = 3

    @Option(help: "Write the results here (JSON) instead of standard output.")
    var out: String?

    func validate() throws {
        guard partners >= 1, projects >= partners, queued >= 1, hosts >= 1, repeats >= 1 else {
            throw ValidationError("expected --partners ≥ 1, --projects ≥ --partners, and --queued, --hosts, --repeats ≥ 1")
        }
    }

    func run() async throws {
        let logger = BenchLogging.logger("comity.bench.sharing")
        let url = try DatabaseURL(databaseURL)
        let began = Ticks.now()
        let (partners, projects, queued, hosts, repeats) = (self.partners, self.projects, self.queued, self.hosts, self.repeats)
        var results = try await PostgresClient.with(try url.clientConfiguration(maxConnections: 4), logger: logger) { client in
            var results = Results()
            try await Migrator(logger: logger).migrate(client)
            let db = ScaleDatabase(client: client, logger: logger)
            let ids = try await db.federation()
            try await db.ensureHosts(hosts)
            try await fill(client, logger: logger, partners: partners, projects: projects, queued: queued, principal: ids.principal)
            try await db.activate(hosts)
            try await undo(client, db: db, logger: logger)
            let store = Store(client: client, logger: logger)
            var result = try await store.schedulingPass()  // warm-up
            var times: [Double] = []
            var samples: [String: [Double]] = [:]
            for _ in 0..<repeats {
                try await undo(client, db: db, logger: logger)
                let t = Ticks.now()
                let timed = try await store.timedSchedulingPass()
                times.append(Ticks.signedMilliseconds(from: t, to: Ticks.now()))
                result = timed.result
                for (part, ms) in timed.parts { samples[part, default: []].append(ms) }
            }
            let spread = try await client.query(
                """
                select count(distinct partner_id), count(distinct project_id), count(*) filter (where guest), count(*) filter (where borrowed),
                       (select count(*) from attempts where stop_after is not null), (select count(*) from reservations)
                from attempts
                """, logger: logger
            ).decode((Int64, Int64, Int64, Int64, Int64, Int64).self).collect().first!
            // Steady state: passes until the pool is full, then one pass that finds it full and plans reclaims for
            // partners owed their share.
            var fillPasses = 0
            var fill = result
            repeat {
                fill = try await store.schedulingPass()
                fillPasses += 1
            } while fill.placed > 0 && fillPasses < 200
            let t = Ticks.now()
            let full = try await store.timedSchedulingPass()
            let fullMs = Ticks.signedMilliseconds(from: t, to: Ticks.now())
            let running = try await client.query("select count(*) from attempts where state in ('assigned', 'running')", logger: logger)
                .decode(Int64.self).collect().first ?? 0
            let reclaims = try await client.query("select count(*) from reservations", logger: logger).decode(Int64.self).collect().first ?? 0
            results["sharing_full_pool_pass_ms"] = .object(["\(queued)x\(hosts)": .number(round1(fullMs))])
            results["sharing_full_pool_breakdown_ms"] = .object(full.parts.mapValues { .number(round1($0)) })
            results.set("sharing_full_pool_running", Int(running))
            results.set("sharing_full_pool_reclaims", Int(reclaims))
            say(
                "sharing: pool full after \(fillPasses) passes (\(running) running): a pass that finds it full takes \(String(format: "%.1f", fullMs)) ms, examined \(full.result.examined), planned \(reclaims) reclaims; "
                    + full.parts.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.1f", $0.value))" }.joined(separator: ", "))
            try await undo(client, db: db, logger: logger)
            let parts = samples.mapValues { Percentiles($0).median }
            results["sharing_pass_breakdown_ms"] = .object(parts.mapValues { .number(round1($0)) })
            say("sharing: median parts of the measured passes: " + parts.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.1f", $0.value))" }.joined(separator: ", "))
            let p = Percentiles(times)
            let key = "\(queued)x\(hosts)"
            results["sharing_pass_ms"] = .object([key: .number(round1(p.median))])
            results["sharing_pass_ms_max"] = .object([key: .number(round1(p.max))])
            results.set("sharing_partners", partners)
            results.set("sharing_projects", projects)
            results.set("sharing_examined", result.examined)
            results.set("sharing_placed", result.placed)
            results.set("sharing_partners_placed", Int(spread.0))
            results.set("sharing_projects_placed", Int(spread.1))
            results.set("sharing_guests", Int(spread.2))
            results.set("sharing_borrowed", Int(spread.3))
            results.set("sharing_reclaims_planned", Int(spread.5))
            say(
                "sharing: \(partners) partners, \(projects) projects, \(key): pass \(String(format: "%.1f", p.median)) ms (max \(String(format: "%.1f", p.max))), examined \(result.examined), placed \(result.placed) for \(spread.0) partners and \(spread.1) projects (\(spread.2) guests, \(spread.3) borrowed), \(spread.5) reclaims planned (\(spread.4) guests told to stop)"
            )
            return results
        }
        results.set("sharing_seconds", Ticks.seconds(from: began, to: Ticks.now()), digits: 1)
        try results.write(to: out)
    }

    /// Undoes a pass: the scale phase's requeue, plus what reclaims wrote.
    func undo(_ client: PostgresClient, db: ScaleDatabase, logger: Logger) async throws {
        try await client.query("delete from reservations", logger: logger)
        try await db.requeue()
        try await db.refreshHeartbeats()
    }

    /// The federation at scale: partners, projects, hosts spread over them, contribution and usage, grants,
    /// quotas, and the queue.
    func fill(_ client: PostgresClient, logger: Logger, partners: Int, projects: Int, queued: Int, principal: Int64) async throws {
        try await client.query(
            """
            insert into partners (name, jurisdiction)
            select 'p' || lpad(i::text, 4, '0'), (array['DE', 'FR', 'KE', 'IN'])[1 + i % 4] from generate_series(0, \(Int64(partners - 1))) i
            on conflict do nothing
            """, logger: logger)
        try await client.query(
            """
            insert into projects (name, partner_id, shares)
            select 'q' || lpad(i::text, 5, '0'), (select id from partners where name = 'p' || lpad((i % \(Int64(partners)))::text, 4, '0')), 1 + i % 3
            from generate_series(0, \(Int64(projects - 1))) i
            on conflict do nothing
            """, logger: logger)
        try await client.query(
            """
            insert into policies (kind, name, version, document, effective_from, reason)
            select 'donor-policy', name, 1, jsonb_build_object('kind', 'donor-policy', 'name', name, 'permit', jsonb_build_array(jsonb_build_object('id', 'everyone'))),
                   now(), 'benchmark'
            from partners where name like 'p%'
            on conflict do nothing
            """, logger: logger)
        // Hosts spread over the partners (every fourth partner has none: it lives on grants and borrowing).
        try await client.query(
            """
            with numbered as (select id, row_number() over (order by id) - 1 as i from hosts where name like 'scale-%'),
                 donors as (select id, row_number() over (order by name) - 1 as k from partners where name like 'p%' and right(name, 1) <> '3')
            update hosts h set partner_id = d.id, region = (array['eu-de-1', 'eu-fr-1', 'ke-nbo-1', 'in-blr-1'])[1 + n.i % 4]
            from numbered n, donors d where h.id = n.id and d.k = n.i % (select count(*) from donors)
            """, logger: logger)
        try await client.query(
            """
            insert into partner_contribution (partner_id, gpu, cpu, memory)
            select partner_id, sum(jsonb_array_length(gpus)) * 86400.0, sum(cpu_millis) / 1000.0 * 86400, sum(memory_bytes) / 1073741824.0 * 86400
            from hosts group by partner_id
            on conflict (partner_id) do update set gpu = excluded.gpu, cpu = excluded.cpu, memory = excluded.memory
            """, logger: logger)
        try await client.query(
            """
            insert into project_usage (project_id, partner_id, gpu, cpu, memory)
            select id, partner_id, (id % 7) * 3600.0, (id % 11) * 36000.0, (id % 5) * 72000.0 from projects
            on conflict (project_id) do nothing
            """, logger: logger)
        try await client.query(
            """
            insert into grants (partner_id, kind, fraction, reason)
            select id, k, 0.005, 'benchmark' from partners, unnest(array['gpu', 'cpu', 'memory']) k where name like 'p%' and name like '%0'
            on conflict do nothing
            """, logger: logger)
        try await client.query(
            """
            insert into quotas (scope, project_id, cpu_millis)
            select 'project', id, 64000 from projects where name like 'q%' and right(name, 1) = '7'
            on conflict do nothing
            """, logger: logger)
        let existing = try await client.query("select count(*) from jobs where name like 'share-%'", logger: logger).decode(Int64.self).collect().first ?? 0
        guard existing < queued else { return }
        let documents = try ScaleDatabase.specDocuments()
        let kinds: [Int32] = [0, 1, 2]
        try await client.query(
            """
            with s as (
                select k, doc::jsonb as d from unnest(\(kinds)::int[], \(documents)::text[]) as t(k, doc)
            ), p as (
                select id, partner_id, row_number() over (order by id) - 1 as n from projects where name like 'q%'
            )
            insert into jobs (project_id, partner_id, submitted_by, name, kind, spec, priority, cpu_millis, memory_bytes,
                              gpus, gpu_model, gpu_memory_bytes, retries)
            select p.id, p.partner_id, \(principal), 'share-' || i, d->>'kind', d, 40 + (i % 3) * 10,
                   (d->'resources'->>'cpu_millis')::int, (d->'resources'->>'memory_bytes')::bigint,
                   (d->'resources'->>'gpus')::int, d->'resources'->>'gpu_model',
                   (d->'resources'->>'gpu_memory_bytes')::bigint, (d->>'retries')::int
            from generate_series(\(existing), \(Int64(queued - 1))) i
            join s on s.k = case i % 20 when 0 then 1 when 10 then 2 else 0 end
            join p on p.n = i % \(Int64(projects))
            order by i
            """, logger: logger)
        try await client.query("vacuum analyze jobs, hosts, partners, projects", logger: logger)
    }
}
