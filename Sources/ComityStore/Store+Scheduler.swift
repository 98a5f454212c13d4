import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The scheduling pass and the lease reaper.
extension Store {
    /// What one pass did.
    package struct PassResult: Sendable {
        package var examined: Int
        package var hosts: Int
        package var placed: Int
        /// The pass examined a full head of the queue: another pass may place more.
        package var headWasFull: Bool
        /// Hosts given new assignments (their agents are woken once the pass committed).
        var woken: [Int64] = []
    }

    static let passLockKey: Int64 = 0x636f_6d69_7479_03

    /// One scheduling pass: under a transaction-scoped advisory lock (so passes of all replicas are serialized by
    /// PostgreSQL), read free capacity and the head of every project's queue, place jobs in fair-share order with
    /// ``Placer`` (reserved jobs first, then ``FairShareQueue``; quotas, borrowing and lending limits and the rules
    /// decide which hosts admit each job), lock the chosen jobs, and write every attempt, job update and event in one
    /// statement; agents of the chosen hosts are woken by `NOTIFY`. Then, for jobs that could not start, plan
    /// reclaims (see ``planReclaims(_:on:)``).
    package func schedulingPass() async throws -> PassResult {
        try await runPass(timed: false).result
    }

    /// Wakes the agents of `hosts` (500 hosts per notification, well under PostgreSQL's 8,000-byte payload limit).
    func wake(_ hosts: [Int64]) async {
        guard !hosts.isEmpty else { return }
        let batches = stride(from: 0, to: hosts.count, by: 500).map { start in
            NoticeSender.Notice(Channel.assign, hosts[start..<min(start + 500, hosts.count)].map(String.init).joined(separator: ","))
        }
        await notices.send(batches)
    }

    /// A pass like ``schedulingPass()`` that also says where it spent its time: milliseconds per step, the commit
    /// included, and the number of rule evaluations (`rule_evaluations`, a count). The server exports the steps as
    /// `comity_scheduler_pass_part_seconds`; `comity-bench` reports them.
    package func timedSchedulingPass() async throws -> (result: PassResult, parts: [String: Double]) {
        try await runPass(timed: true)
    }

    /// One pass in its transaction, then the wake-up of the hosts it gave work.
    private func runPass(timed: Bool) async throws -> (result: PassResult, parts: [String: Double]) {
        var (result, clock) = try await transaction { connection in
            var clock = PassClock(enabled: timed)
            let result = try await pass(on: connection, clock: &clock)
            return (result, clock)
        }
        clock.lap("commit")
        await wake(result.woken)
        return (result, clock.parts)
    }

    /// Times the steps of a pass when enabled.
    struct PassClock {
        let enabled: Bool
        var parts: [String: Double] = [:]
        private var last = ContinuousClock.now

        init(enabled: Bool) { self.enabled = enabled }

        /// Records a count beside the times (not a duration).
        mutating func count(_ part: String, _ value: Int) {
            if enabled { parts[part] = Double(value) }
        }

        mutating func lap(_ part: String) {
            guard enabled else { return }
            let now = ContinuousClock.now
            let elapsed = now - last
            parts[part, default: 0] += Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
            last = now
        }
    }

    /// The pass's own statements, prepared once per connection (see ``HotStatement``): parsed and planned once, or,
    /// for those with values, planned for their values until PostgreSQL finds the plan for any value no costlier.
    /// Planning the write took 1.3 ms against 0.7 ms to run it for one placement (large writes are still planned for
    /// their values: see ``write(_:policyVersion:on:)``). Each statement's plan for any value must be good at any size
    /// of the tables: the write finds the jobs it locks by their keys, never through an index whose leading column it
    /// does not have (a plan for any value once scanned all of `jobs_queue` for them).
    enum PassReservations: HotStatement {
        static let sql = """
            with gone as (
                delete from reservations r
                where r.expires_at < now() or not exists (select 1 from jobs j where j.id = r.job_id and j.state = 'queued')
                returning job_id
            )
            select job_id, host_id from reservations where job_id not in (select job_id from gone)
            """
    }
    enum PassHead: HotStatement { static let sql = Store.queuedHeadQuery(limit: 0).sql }
    enum PassHoldings: HotStatement { static let sql = Store.activeHoldingsSQL }
    enum PassLiveHosts: HotStatement { static let sql = Store.liveHostsQuery(timeoutSeconds: 0).sql }
    enum PassWrite: HotStatement { static let sql = try! Store.passWriteQuery([], hosts: [:], policyVersion: "", leaseSeconds: 0).sql }

    func pass(on connection: PostgresConnection, clock: inout PassClock) async throws -> PassResult {
        try await connection.query("select pg_advisory_xact_lock(\(Self.passLockKey))", logger: logger)
        let reservations = try await run(PassReservations.self, on: connection).map { try $0.decode((Int64, Int64).self) }
        clock.lap("lock_and_reservations")
        var head = try await queuedHead(on: connection)
        let reservedHost = Dictionary(reservations.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        if !reservedHost.isEmpty {
            let inHead = Set(head.map(\.job.id))
            let missing = reservedHost.keys.filter { !inHead.contains($0) }
            if !missing.isEmpty { head += try await queuedJobs(missing, on: connection) }
        }
        guard let first = head.first else { return PassResult(examined: 0, hosts: 0, placed: 0, headWasFull: false) }
        clock.lap("head_select")
        let context = try await policyContext(on: connection, knownGeneration: first.policyGeneration)
        let sharing = try await sharingContext(on: connection, knownGeneration: first.sharingGeneration)
        clock.lap("rules_and_sharing_context")
        var pending: [PendingJob] = []
        pending.reserveCapacity(head.count)
        var preemptible: [Int64: Bool] = [:]
        // Jobs alike for the rules share a class, evaluated once per kind of host.
        var classes: [JobFacts: Int] = [:]
        var classFacts: [JobFacts] = []
        for row in head {
            var facts = row.job.facts(context)
            // Deciding only: projects the rules cannot tell apart share a class.
            if let representative = context.decisionProject[facts.project] { facts.project = representative }
            let policyClass: Int
            if let known = classes[facts] {
                policyClass = known
            } else {
                policyClass = classFacts.count
                classes[facts] = policyClass
                classFacts.append(facts)
            }
            pending.append(
                PendingJob(
                    id: row.job.id, resources: row.resources, priority: row.priority, partnerID: row.job.partnerID, projectID: row.job.projectID,
                    policyClass: policyClass))
            preemptible[row.job.id] = row.preemptible
        }
        clock.lap("job_classes")
        let pool = try await availableHosts(context, sharing: sharing, poolGeneration: first.poolGeneration, on: connection, clock: &clock)
        let now = Date()
        let active = context.active(at: now)
        var memo = EligibilityMemo(snapshot: context.snapshot, classes: classFacts, hostKeys: pool.hostFacts, at: now)
        var round = SharingRound(
            sharing: sharing, pool: pool, preemptible: preemptible, reservedHosts: Set(reservedHost.values),
            spread: try await spread(head, on: connection))
        // Reserved jobs first, each on the host reclaimed for it.
        var placements: [SharingRound.Placed] = []
        for job in pending where reservedHost[job.id] != nil {
            let host = reservedHost[job.id]!
            if let placed = round.place(job, onlyOn: host, eligible: { memo.eligible($0, $1) }) { placements.append(placed) }
        }
        let ordered = pending.filter { reservedHost[$0.id] == nil }
        var queue = FairShareQueue(jobs: ordered, partners: round.partnerStandings, projects: round.projectStandings, capacity: pool.capacity)
        var unplaced: [PendingJob] = []
        while placements.count < configuration.passHeadLimit, let index = queue.next() {
            let job = ordered[index]
            let placed = round.place(job, eligible: { memo.eligible($0, $1) })
            queue.record(index, holding: placed?.holding)
            if let placed { placements.append(placed) } else if !round.quotaBlocked(job) { unplaced.append(job) }
        }
        clock.lap("fair_share_and_placer")
        clock.count("rule_evaluations", memo.evaluated)
        // Reclaims before the write: they lock the guests' rows first, as every rule change does.
        if !unplaced.isEmpty, configuration.reclaimsPerPass > 0 {
            try await planReclaims(unplaced, round: round, context: context, memo: &memo, reserved: Set(reservedHost.keys), on: connection)
            clock.lap("reclaims")
        }
        let (placed, woken) =
            placements.isEmpty ? (0, []) : try await write(placements, hosts: pool.factsByHost, policyVersion: active.id, on: connection)
        clock.lap("write")
        return PassResult(
            examined: pending.count, hosts: pool.hosts.count, placed: placed,
            headWasFull: placed > 0 && (placements.count >= configuration.passHeadLimit || Self.someProjectHeadFull(head, limit: configuration.passHeadLimit)),
            woken: woken)
    }

    /// Where the services of the replica jobs in `head` have replicas now (nothing is read when none is a replica).
    func spread(_ head: [QueuedRow], on connection: PostgresConnection) async throws -> SharingRound.Spread {
        var serviceOf: [Int64: Int64] = [:]
        for row in head { if let service = row.serviceID { serviceOf[row.job.id] = service } }
        guard !serviceOf.isEmpty else { return SharingRound.Spread() }
        var hosts: [Int64: Set<Int64>] = [:]
        for try await (service, host) in try await connection.query(
            """
            select j.service_id, a.host_id from jobs j join attempts a on a.job_id = j.id
            where j.service_id = any(\(Array(Set(serviceOf.values)))::bigint[]) and a.state in ('assigned', 'running')
            """, logger: logger
        ).decode((Int64, Int64).self) {
            hosts[service, default: []].insert(host)
        }
        return SharingRound.Spread(serviceOf: serviceOf, hosts: hosts)
    }

    /// A queued job as a pass reads it.
    struct QueuedRow: Sendable {
        /// What the rules read of it.
        var job: JobPolicyRow
        var resources: ResourceRequest
        var priority: Int
        var preemptible: Bool
        var policyGeneration: Int64
        var sharingGeneration: Int64
        /// The service of a replica job (services spread their replicas over distinct hosts).
        var serviceID: Int64? = nil
        /// The pool's generation (hosts joined, changed state or inventory) when the row was read.
        var poolGeneration: Int64 = 0
    }

    static let queuedColumns = """
        j.id, j.cpu_millis, j.memory_bytes, j.gpus, j.gpu_model, j.gpu_memory_bytes, j.priority, j.project_id, j.partner_id, j.kind, j.inputs,
        j.max_runtime_seconds, j.preemptible, (select generation from policy_state), (select generation from sharing_state),
        coalesce((j.spec->>'network')::boolean, false), j.service_id, (select sum(generation)::bigint from pool_state)
        """

    /// The head of every project's queue: each project's first jobs (priority, then submission), the bounded head
    /// divided among the projects that have queued jobs (at least ``minimumPerProject`` each; a pass places at most
    /// the head limit). Projects are found by a loose index scan (one index probe per project), so the cost follows
    /// the number of projects, not of queued jobs. A project whose first jobs cannot run waits behind them, as a
    /// Slurm partition's does past its scheduling depth.
    func queuedHead(on connection: PostgresConnection) async throws -> [QueuedRow] {
        try decodeQueued(try await run(PassHead.self, Self.queuedHeadQuery(limit: configuration.passHeadLimit), on: connection))
    }

    /// The pass's queue-head select (also for `comity-bench scale`'s query plans).
    package static func queuedHeadQuery(limit: Int) -> PostgresQuery {
        """
        with recursive p(project_id) as (
            (select project_id from jobs where state = 'queued' order by project_id limit 1)
            union all
            select (select j.project_id from jobs j where j.state = 'queued' and j.project_id > p.project_id order by j.project_id limit 1)
            from p where p.project_id is not null
        ), n as (
            select greatest(\(unescaped: String(minimumPerProject)), \(Int32(limit)) / greatest(1, count(*))) as per_project from p where project_id is not null
        )
        select \(unescaped: queuedColumns)
        from p cross join lateral (
            select * from jobs j where j.state = 'queued' and j.project_id = p.project_id
            order by j.priority desc, j.id limit (select per_project from n)
        ) j
        where p.project_id is not null
        order by p.project_id, j.priority desc, j.id
        """
    }

    /// Whether some project's head was cut at its share of the head limit (another pass may place more).
    static func someProjectHeadFull(_ head: [QueuedRow], limit: Int) -> Bool {
        var counts: [Int64: Int] = [:]
        for row in head { counts[row.job.projectID, default: 0] += 1 }
        let perProject = max(Self.minimumPerProject, limit / max(1, counts.count))
        return counts.values.contains { $0 >= perProject }
    }

    /// Each project's head holds at least this many jobs, however many projects have queued jobs.
    static let minimumPerProject = 8

    func queuedJobs(_ ids: [Int64], on connection: PostgresConnection) async throws -> [QueuedRow] {
        try decodeQueued(
            try await connection.query("select \(unescaped: Self.queuedColumns) from jobs j where j.id = any(\(ids)::bigint[]) and j.state = 'queued'", logger: logger)
                .collect())
    }

    private func decodeQueued(_ rows: [PostgresRow]) throws -> [QueuedRow] {
        var result: [QueuedRow] = []
        result.reserveCapacity(rows.count)
        for row in rows {
            // Cell by cell: a pass decodes up to 1,000 of these rows (2,000 before round 6), and PostgresNIO's decode
            // of an 18-column tuple looked the tuple's type up in the runtime for every row.
            var cells = Cells(row)
            let id = try cells.next(Int64.self), cpu = try cells.next(Int32.self), memory = try cells.next(Int64.self)
            let gpus = try cells.next(Int32.self), model = try cells.next(String?.self), gpuMemory = try cells.next(Int64?.self)
            let priority = try cells.next(Int32.self), project = try cells.next(Int64.self), partner = try cells.next(Int64.self)
            let kind = try cells.next(String.self), inputs = try cells.next([String].self), runtime = try cells.next(Int64.self)
            let preemptible = try cells.next(Bool.self), policy = try cells.next(Int64.self), sharing = try cells.next(Int64.self)
            let network = try cells.next(Bool.self), service = try cells.next(Int64?.self), pool = try cells.next(Int64.self)
            result.append(
                QueuedRow(
                    job: JobPolicyRow(
                        id: id, projectID: project, partnerID: partner, kind: JobKind(rawValue: kind) ?? .training, inputs: inputs, maxRuntimeSeconds: runtime,
                        network: network),
                    resources: ResourceRequest(cpuMillis: Int(cpu), memoryBytes: memory, gpus: Int(gpus), gpuModel: model, gpuMemoryBytes: gpuMemory),
                    priority: Int(priority), preemptible: preemptible, policyGeneration: policy, sharingGeneration: sharing, serviceID: service,
                    poolGeneration: pool))
        }
        return result
    }

    /// What active attempts hold, per host, partner, project and guest flag.
    struct Holding: Sendable {
        var hostID: Int64
        var partnerID: Int64?
        var projectID: Int64?
        var guest: Bool
        var cpuMillis: Int
        var memoryBytes: Int64
        var gpuIndices: [Int]
    }

    /// The pass's aggregation of active attempts (also for `comity-bench scale`'s query plans).
    package static let activeHoldingsSQL = """
        select host_id, partner_id, project_id, guest, sum(cpu_millis)::bigint, sum(memory_bytes)::bigint,
               string_agg(array_to_string(gpu_indices, ','), ',')
        from attempts where state in ('assigned', 'running') group by host_id, partner_id, project_id, guest
        """

    func activeHoldings(on connection: PostgresConnection) async throws -> [Holding] {
        try await run(PassHoldings.self, on: connection).map {
            try $0.decode((Int64, Int64?, Int64?, Bool, Int64, Int64, String?).self)
        }.map { host, partner, project, guest, cpu, memory, gpus in
            Holding(
                hostID: host, partnerID: partner, projectID: project, guest: guest, cpuMillis: Int(cpu), memoryBytes: memory,
                gpuIndices: Self.indices(gpus ?? ""))
        }
    }

    /// What the active attempts of each host hold.
    func activeUsage(on connection: PostgresConnection) async throws -> [Int64: (cpu: Int, memory: Int64, gpus: Set<Int>)] {
        Self.usageByHost(try await activeHoldings(on: connection))
    }

    static func usageByHost(_ holdings: [Holding]) -> [Int64: (cpu: Int, memory: Int64, gpus: Set<Int>)] {
        var used: [Int64: (cpu: Int, memory: Int64, gpus: Set<Int>)] = [:]
        for holding in holdings {
            var entry = used[holding.hostID] ?? (0, 0, [])
            entry.cpu += holding.cpuMillis
            entry.memory += holding.memoryBytes
            entry.gpus.formUnion(holding.gpuIndices)
            used[holding.hostID] = entry
        }
        return used
    }

    /// The pool a pass places on: active hosts with a fresh heartbeat and what is free on them, the facts the rules
    /// read of them (`hostFacts[host.policyKey]` describes every host with that key), the pools' sizes, and what
    /// every attempt holds.
    struct Pool: Sendable {
        var hosts: [HostAvailability]
        var hostFacts: [HostFacts]
        /// Per host key of `hosts`: the same host's facts.
        var factsByHost: [Int64: HostFacts]
        var capacity: ShareVector
        /// Per partner: what its available hosts offer.
        var partnerCapacity: [Int64: ShareVector]
        var holdings: [Holding]
        var hostGPUs: [Int64: [GPU]]
        var hostRegion: [Int64: String]
        var hostPartner: [Int64: Int64]
        /// The mean weight of each host's GPUs.
        var hostGPUWeight: [Int64: Double] = [:]
        /// The placer's groups of `hosts`, when derived from the base's (``PoolBase/groups``); `nil`: built afresh.
        var groups: Placer.HostGroups?

        /// What CPUs, memory and the GPUs `gpuIndices` of a host count for (a GPU the pool does not know weighs 1).
        func weighted(_ request: ResourceRequest, gpuIndices: [Int], on host: Int64, weights: GPUWeights) -> ShareVector {
            ShareVector(
                cpuMillis: request.cpuMillis, memoryBytes: request.memoryBytes,
                weightedGPUs: weights.weighted(indices: gpuIndices, of: hostGPUs[host] ?? []))
        }
    }

    /// The live hosts and the version of their inventories, in id order (also for `comity-bench scale`'s plans):
    /// `active` hosts whose last heartbeat is younger than the host timeout (the reaper marks the others down within
    /// a second, but it may not have run yet, as after the server started).
    package static func liveHostsQuery(timeoutSeconds: Int) -> PostgresQuery {
        """
        select id, inventory_version from hosts
        where state = 'active' and last_heartbeat > now() - make_interval(secs => \(Double(timeoutSeconds)))
        order by id
        """
    }

    /// - Parameter poolGeneration: `pool_state`'s generation as read in this transaction; `nil` reads the live
    ///   hosts in any case.
    func availableHosts(
        _ context: PolicyContext, sharing: SharingContext, poolGeneration: Int64? = nil, on connection: PostgresConnection, clock: inout PassClock
    ) async throws -> Pool {
        let holdings = try await activeHoldings(on: connection)
        let used = Self.usageByHost(holdings)
        clock.lap("usage")
        // What the pool is made of changes rarely (a host joins, leaves, or reports new resources; a rule or a GPU
        // weight changes): the hosts' decoded facts, keys and capacities are kept between passes and rebuilt only
        // then. While the pool's generation stands, the live hosts are not even read; when it moved, they are read
        // with their inventory versions, and the base is rebuilt only if those differ. A host that goes silent
        // leaves when the reaper marks it down (within its interval, a second), which moves the generation.
        let kept = poolCache.base.withLock { $0 }.flatMap { kept in
            kept.policyGeneration == context.generation && kept.sharingGeneration == sharing.generation ? kept : nil
        }
        let base: PoolBase
        if let kept, let poolGeneration, kept.poolGeneration == poolGeneration {
            base = kept
        } else {
            let live = try await run(
                PassLiveHosts.self, Self.liveHostsQuery(timeoutSeconds: configuration.hostTimeoutSeconds), on: connection
            ).map { row in
                let (id, version) = try row.decode((Int64, Int64).self)
                return HostVersion(id: id, version: version)
            }
            clock.lap("live_hosts")
            var rebuilt: PoolBase
            if let kept, kept.live == live {
                rebuilt = kept
            } else {
                rebuilt = try await poolBase(live, context: context, sharing: sharing, on: connection)
            }
            rebuilt.poolGeneration = poolGeneration ?? -1
            base = rebuilt
            poolCache.base.withLock { $0 = rebuilt }
        }
        var pool = Pool(
            hosts: [], hostFacts: base.hostFacts, factsByHost: base.factsByHost, capacity: base.capacity, partnerCapacity: base.partnerCapacity,
            holdings: holdings, hostGPUs: base.hostGPUs, hostRegion: base.hostRegion, hostPartner: base.hostPartner,
            hostGPUWeight: base.hostGPUWeight)
        pool.hosts.reserveCapacity(base.hosts.count)
        var holding: [Int] = []
        for (index, host) in base.hosts.enumerated() {
            guard let usage = used[host.id] else {
                pool.hosts.append(host)
                continue
            }
            var available = host
            available.freeCPUMillis -= usage.cpu
            available.freeMemoryBytes -= usage.memory
            if !usage.gpus.isEmpty { available.freeGPUs = host.freeGPUs.filter { !usage.gpus.contains($0.index) } }
            pool.hosts.append(available)
            holding.append(index)
        }
        // The placer's groups: the idle pool's, with the hosts that hold work moved (a full pool is grouped afresh).
        if holding.count <= base.hosts.count / 4 { pool.groups = base.groups.moving(holding, from: base.shapes, to: pool.hosts) }
        // Attempts still held on hosts that left the pool (down, draining) count for quotas, lending and standings
        // until they end: their hosts' region, owner and GPUs too.
        let missing = Array(Set(holdings.map(\.hostID)).filter { pool.hostRegion[$0] == nil })
        if !missing.isEmpty {
            for try await (id, region, partner, gpusText) in try await connection.query(
                "select id, region, partner_id, gpus::text from hosts where id = any(\(missing)::bigint[])", logger: logger
            ).decode((Int64, String, Int64, String).self) {
                pool.hostRegion[id] = region
                pool.hostPartner[id] = partner
                pool.hostGPUs[id] = try gpuCache.gpus(host: id, json: gpusText)
            }
        }
        clock.lap("pool")
        return pool
    }

    func availableHosts(_ context: PolicyContext, sharing: SharingContext, on connection: PostgresConnection) async throws -> Pool {
        var clock = PassClock(enabled: false)
        return try await availableHosts(context, sharing: sharing, on: connection, clock: &clock)
    }

    /// The pool's base as last built (see ``availableHosts(_:sharing:on:clock:)``).
    final class PoolCache: Sendable {
        let base = Mutex<PoolBase?>(nil)
        init() {}
    }

    /// A host and the version of its inventory.
    struct HostVersion: Equatable, Sendable {
        var id: Int64
        var version: Int64
    }

    /// What the pool is made of, kept between passes while it does not change: each live host with nothing allocated,
    /// the facts the rules read of it, its key, and the capacities.
    struct PoolBase: Sendable {
        var live: [HostVersion]
        /// `pool_state`'s generation this base stands for (-1: unknown).
        var poolGeneration: Int64 = -1
        var policyGeneration: Int64
        var sharingGeneration: Int64
        var hosts: [HostAvailability]
        var hostFacts: [HostFacts]
        var factsByHost: [Int64: HostFacts]
        var capacity: ShareVector
        var partnerCapacity: [Int64: ShareVector]
        var hostGPUs: [Int64: [GPU]]
        var hostRegion: [Int64: String]
        var hostPartner: [Int64: Int64]
        var hostGPUWeight: [Int64: Double]
        /// The placer's shape of each of `hosts` idle, and their groups: a pass moves only the hosts that hold work.
        var shapes: [Placer.HostShape] = []
        var groups = Placer.HostGroups(shapes: [])
    }

    /// Reads and decodes the `live` hosts.
    func poolBase(_ live: [HostVersion], context: PolicyContext, sharing: SharingContext, on connection: PostgresConnection) async throws -> PoolBase {
        var base = PoolBase(
            live: live, policyGeneration: context.generation, sharingGeneration: sharing.generation, hosts: [], hostFacts: [], factsByHost: [:],
            capacity: .zero, partnerCapacity: [:], hostGPUs: [:], hostRegion: [:], hostPartner: [:], hostGPUWeight: [:])
        var keys: [PolicyHostKey: Int] = [:]
        var labelCache: [String: [String: String]] = [:]
        var rows: [Int64: (Int32, Int64, String, Int64, String, String, String, String)] = [:]
        for try await (id, cpu, memory, gpusText, partner, region, labelsText, name, runner) in try await connection.query(
            """
            select id, cpu_millis, memory_bytes, gpus::text, partner_id, region, labels::text, name, runner from hosts
            where id = any(\(live.map(\.id))::bigint[])
            """, logger: logger
        ).decode((Int64, Int32, Int64, String, Int64, String, String, String, String).self) {
            rows[id] = (cpu, memory, gpusText, partner, region, labelsText, name, runner)
        }
        // In id order, as the pass always saw them.
        for host in live {
            guard let (cpu, memory, gpusText, partner, region, labelsText, name, runner) = rows[host.id] else { continue }
            let id = host.id
            let gpus = try gpuCache.gpus(host: id, json: gpusText)
            let labels: [String: String]
            if let known = labelCache[labelsText] {
                labels = known
            } else {
                labels = try WireJSON.sharedDecoder.decode([String: String].self, from: Data(labelsText.utf8))
                labelCache[labelsText] = labels
            }
            let facts = HostFacts(
                id: id, name: name, partner: context.partnerNames[partner] ?? "#\(partner)", region: region,
                jurisdiction: context.regionJurisdiction[region] ?? "?", labels: labels, runner: RunnerKind(rawValue: runner) ?? .process)
            let key: Int
            if let known = keys[facts.policyKey] {
                key = known
            } else {
                key = base.hostFacts.count
                keys[facts.policyKey] = key
                base.hostFacts.append(facts)
            }
            base.factsByHost[id] = facts
            base.hostGPUs[id] = gpus
            base.hostRegion[id] = region
            base.hostPartner[id] = partner
            let weighted = sharing.weights.weighted(gpus)
            if !gpus.isEmpty { base.hostGPUWeight[id] = weighted / Double(gpus.count) }
            let capacity = ShareVector(cpuMillis: Int(cpu), memoryBytes: memory, weightedGPUs: weighted)
            base.capacity += capacity
            base.partnerCapacity[partner, default: .zero] += capacity
            base.hosts.append(
                HostAvailability(
                    id: id, freeCPUMillis: Int(cpu), freeMemoryBytes: memory, freeGPUs: gpus, totalGPUs: gpus.count, partnerID: partner,
                    policyKey: key, region: region))
        }
        base.shapes = base.hosts.map(Placer.HostShape.init)
        base.groups = Placer.HostGroups(shapes: base.shapes)
        return base
    }

    /// Writes placements in one statement: it moves only the jobs being placed to `assigned` (not the whole head: row
    /// locks are written to disk), skipping any that stopped being queued since the head was read (a cancel committed
    /// in between), then inserts their attempts and records the events and audit entries.
    ///
    /// - Returns: how many placements were written, and the hosts they went to (to wake after the commit).
    ///
    /// A pass of a few placements (a job just submitted to an idle pool) runs the prepared write; a larger one is
    /// planned for its own arrays. PostgreSQL keeps a prepared statement's plan for any value once that plan is
    /// estimated no costlier, and the plan it kept from estimates for a few rows took 290–390 ms for 2,000
    /// placements, against 100–170 ms when planned for them (the full benchmark's scale phase).
    ///
    /// `hosts` holds the facts of every host placed on, as the pool read them from `hosts` (name, region, partner): the
    /// event and the ledger entry name them without joining `hosts` again (two hash joins of every host, 8–10 ms of a
    /// 2,000-placement write at 10,000 hosts).
    func write(
        _ placements: [SharingRound.Placed], hosts: [Int64: HostFacts], policyVersion: String, on connection: PostgresConnection
    ) async throws -> (Int, [Int64]) {
        let query = try Self.passWriteQuery(placements, hosts: hosts, policyVersion: policyVersion, leaseSeconds: Double(configuration.leaseSeconds))
        let rows: [PostgresRow] =
            placements.count <= Self.preparedWriteLimit
            ? try await run(PassWrite.self, query, on: connection) : try await connection.query(query, logger: logger).collect()
        guard let row = rows.first else { return (0, []) }
        let (placed, woken, _) = try row.decode((Int64, [Int64], Int64).self)
        return (Int(placed), woken)
    }

    /// The most placements written by the prepared write (see ``write(_:policyVersion:on:)``).
    static let preparedWriteLimit = 32

    /// The write of a pass's placements (see ``write(_:policyVersion:on:)``).
    static func passWriteQuery(
        _ placements: [SharingRound.Placed], hosts facts: [Int64: HostFacts], policyVersion: String, leaseSeconds: Double
    ) throws -> PostgresQuery {
        let jobs = placements.map(\.placement.jobID)
        let hosts = placements.map(\.placement.hostID)
        let gpus = placements.map { "{" + $0.placement.gpuIndices.map(String.init).joined(separator: ",") + "}" }
        let guests = placements.map(\.guest)
        let borrowed = placements.map(\.borrowed)
        let placedOn = try placements.map {
            guard let host = facts[$0.placement.hostID] else { throw StoreError(.database, "no facts of host \($0.placement.hostID) for the pass's write") }
            return host
        }
        let names = placedOn.map(\.name), regions = placedOn.map(\.region), partners = placedOn.map(\.partner)
        return
            """
            with p as (
                select * from unnest(\(jobs)::bigint[], \(hosts)::bigint[], \(gpus)::text[], \(guests)::boolean[], \(borrowed)::boolean[],
                                     \(names)::text[], \(regions)::text[], \(partners)::text[])
                    as p(job_id, host_id, gpus, guest, borrowed, host_name, region, host_partner)
            ), u as (
                -- Locks, checks and moves each job in one step, and numbers its attempt: a job that stopped being
                -- queued since the head was read (a cancel committed in between) is skipped. Locking the jobs first
                -- and updating them after the attempts were inserted wrote each job twice.
                update jobs j set state = 'assigned', current_attempt = nextval('attempts_id_seq'), attempts = j.attempts + 1
                from p where j.id = p.job_id and j.state = 'queued'
                returning j.current_attempt as id, j.id as job_id, p.host_id, j.attempts as number, p.gpus, p.guest, p.borrowed,
                          j.cpu_millis, j.memory_bytes, j.partner_id, j.project_id, j.inputs, j.permitted_jurisdictions,
                          \(policyVersion)::text as policy, p.host_name, p.region, p.host_partner
            ), a as (
                insert into attempts (id, job_id, host_id, number, cpu_millis, memory_bytes, gpu_indices, lease_expires_at, policy_version,
                                      partner_id, project_id, guest, borrowed)
                overriding system value
                select u.id, u.job_id, u.host_id, u.number, u.cpu_millis, u.memory_bytes, u.gpus::integer[],
                       now() + make_interval(secs => \(leaseSeconds)), u.policy, u.partner_id, u.project_id, u.guest, u.borrowed
                from u
            ), reserved as (
                delete from reservations where job_id in (select job_id from u)
            ), e as (
                insert into job_events (job_id, attempt_id, kind, message)
                select u.job_id, u.id, 'assigned', 'try ' || u.number || ': assigned to ' || u.host_name || ' (' || u.region || ') under rules ' || u.policy
                       || case when u.borrowed then '; borrowed capacity beyond its partner''s share: preemptible' else '' end
                from u
            ), audited as (
                \(unescaped: Self.auditInsert(
                    kind: "'placed'", actor: "'scheduler'", job: "x.job_id", host: "x.host_id",
                    partners: "case when jp.name = x.host_partner then array[jp.name] else array[jp.name, x.host_partner] end",
                    region: "x.region", datasets: "x.inputs", policy: "x.policy",
                    body: "json_build_object('attempt', x.id, 'try', x.number, 'gpus', x.gpus, 'class', case when jp.name = x.host_partner then 'own' when x.borrowed then 'borrowed' else 'guest' end, 'permitted', x.permitted_jurisdictions)",
                    from: "u x join partners jp on jp.id = x.partner_id", order: "x.job_id, x.host_id"))
            )
            select (select count(*) from u), coalesce((select array_agg(distinct host_id) from u), '{}'), (select count(*) from audited)
            """
    }

    /// Ends attempts whose lease expired (the agent vanished): each becomes `lost`, and its job requeues while
    /// retries remain (or ends `cancelled` if a cancel was pending, `failed` otherwise). Also marks hosts without a
    /// recent heartbeat `down`. Safe to run from every replica at once (`SKIP LOCKED`).
    ///
    /// - Returns: the number of attempts that expired.
    @discardableResult
    package func reap() async throws -> Int {
        try await transaction { connection in
            try await connection.query(
                """
                with down as (
                    -- SKIP LOCKED: a host whose heartbeat is being written is not silent, and the reaper never waits
                    -- for a heartbeat.
                    update hosts set state = 'down'
                    where id in (
                        select id from hosts
                        where state = 'active' and last_heartbeat < now() - make_interval(secs => \(Double(configuration.hostTimeoutSeconds)))
                        for no key update skip locked)
                    returning id, name, region, partner_id
                )
                \(unescaped: Self.auditHostsDown(reason: "no heartbeat"))
                """, logger: logger)
            let expired = try await connection.query(
                """
                select a.id, a.job_id, j.state, j.current_attempt = a.id, j.attempts - j.policy_stops, j.retries, j.cancel_requested
                from attempts a join jobs j on j.id = a.job_id
                where a.state in ('assigned', 'running') and a.lease_expires_at < now()
                order by a.lease_expires_at limit 1000
                for no key update of a, j skip locked
                """, logger: logger
            ).decode((Int64, Int64, String, Bool, Int32, Int32, Bool).self).collect()
            guard !expired.isEmpty else { return 0 }
            var attemptIDs: [Int64] = []
            var jobIDs: [Int64] = []
            var nextStates: [String] = []
            var messages: [String] = []
            for (attempt, job, state, isCurrent, attempts, retries, cancelRequested) in expired {
                attemptIDs.append(attempt)
                var message = "lease expired: the agent stopped renewing it"
                if isCurrent, let current = JobState(rawValue: state) {
                    let transition = JobTransition(state: current, attemptsUsed: Int(attempts), retries: Int(retries))
                    if let next = transition.next(on: cancelRequested ? .cancelled : .attemptLost) {
                        jobIDs.append(job)
                        nextStates.append(next.rawValue)
                        message += next == .queued ? "; requeued" : "; job \(next.rawValue)"
                    }
                }
                messages.append(message)
            }
            // An agent that let a lease run out while its heartbeats also stopped is gone: take its host out of
            // placement now rather than after the host timeout, so the requeued job does not land there again.
            try await connection.query(
                """
                with down as (
                    update hosts set state = 'down'
                    where id in (
                        select id from hosts
                        where state = 'active' and id in (select host_id from attempts where id = any(\(attemptIDs)::bigint[]))
                          and last_heartbeat < now() - make_interval(secs => \(Double(2 * configuration.heartbeatSeconds)))
                        for no key update skip locked)
                    returning id, name, region, partner_id
                )
                \(unescaped: Self.auditHostsDown(reason: "lease expired, heartbeats stopped"))
                """, logger: logger)
            try await connection.query(
                """
                with lost as (
                    update attempts set state = 'lost', ended_at = now(), reason = 'lease expired'
                    where id = any(\(attemptIDs)::bigint[]) returning id, job_id, host_id
                ), e as (
                    insert into job_events (job_id, attempt_id, kind, message)
                    select l.job_id, l.id, 'lost', m.message
                    from lost l join unnest(\(attemptIDs)::bigint[], \(messages)::text[]) as m(id, message) on m.id = l.id
                ), audited as (
                    \(unescaped: Self.auditRows(
                        kind: "'lost'", actor: "'reaper'", body: "json_build_object('attempt', x.id, 'reason', 'lease expired')", from: "lost"))
                )
                select count(*) from audited
                """, logger: logger)
            if !jobIDs.isEmpty {
                try await connection.query(
                    """
                    update jobs j set state = n.state, reason = case when n.state = 'cancelled' then j.reason else 'lost: lease expired' end,
                        finished_at = case when n.state in ('failed', 'cancelled') then now() end, cancel_requested = false
                    from unnest(\(jobIDs)::bigint[], \(nextStates)::text[]) as n(id, state)
                    where j.id = n.id
                    """, logger: logger)
                for job in jobIDs {
                    try await connection.query("select pg_notify(\(Channel.job), \(String(job)))", logger: logger)
                }
            }
            try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger)
            logger.info("attempts expired", metadata: ["count": "\(expired.count)", "requeued": "\(nextStates.filter { $0 == "queued" }.count)"])
            return expired.count
        }
    }
}
