import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO

/// The scheduling pass and the lease reaper.
extension Store {
    /// What one pass did.
    package struct PassResult: Sendable {
        package var examined: Int
        package var hosts: Int
        package var placed: Int
        /// The pass examined a full head of the queue: another pass may place more.
        package var headWasFull: Bool
    }

    static let passLockKey: Int64 = 0x636f_6d69_7479_03

    /// One scheduling pass: under a transaction-scoped advisory lock (so passes of all replicas are serialized by
    /// PostgreSQL), read free capacity and the head of the queue, place with ``Placer``, lock the chosen jobs, and
    /// write every attempt, job update and event in one statement; agents of the chosen hosts are woken by `NOTIFY`.
    package func schedulingPass() async throws -> PassResult {
        try await transaction { connection in
            try await connection.query("select pg_advisory_xact_lock(\(Self.passLockKey))", logger: logger)
            let head = try await connection.query(
                """
                select id, cpu_millis, memory_bytes, gpus, gpu_model, gpu_memory_bytes, priority, project_id, partner_id, kind, inputs,
                       max_runtime_seconds, (select generation from policy_state)
                from jobs where state = 'queued' order by priority desc, id limit \(Int64(configuration.passHeadLimit))
                """, logger: logger
            ).decode((Int64, Int32, Int64, Int32, String?, Int64?, Int32, Int64, Int64, String, [String], Int64, Int64).self).collect()
            guard let generation = head.first?.12 else { return PassResult(examined: 0, hosts: 0, placed: 0, headWasFull: false) }
            let context = try await policyContext(on: connection, knownGeneration: generation)
            var pending: [PendingJob] = []
            pending.reserveCapacity(head.count)
            // Jobs alike for the rules share a class, evaluated once per kind of host.
            var classes: [JobFacts: Int] = [:]
            var classFacts: [JobFacts] = []
            for (id, cpu, memory, gpus, model, gpuMemory, priority, project, partner, kind, inputs, runtime, _) in head {
                let facts = JobPolicyRow(
                    id: id, projectID: project, partnerID: partner, kind: JobKind(rawValue: kind) ?? .training, inputs: inputs, maxRuntimeSeconds: runtime
                ).facts(context)
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
                        id: id,
                        resources: ResourceRequest(
                            cpuMillis: Int(cpu), memoryBytes: memory, gpus: Int(gpus), gpuModel: model, gpuMemoryBytes: gpuMemory),
                        priority: Int(priority), partnerID: partner, policyClass: policyClass))
            }
            guard !pending.isEmpty else { return PassResult(examined: 0, hosts: 0, placed: 0, headWasFull: false) }
            let (hosts, hostFacts) = try await availableHosts(context, on: connection)
            let now = Date()
            let active = context.active(at: now)
            var memo = EligibilityMemo(snapshot: context.snapshot, classes: classFacts, hostKeys: hostFacts, at: now)
            let placements = Placer.place(pending, on: hosts) { memo.eligible($0, $1) }
            let placed = placements.isEmpty ? 0 : try await write(placements, policyVersion: active.id, on: connection)
            return PassResult(
                examined: pending.count, hosts: hosts.count, placed: placed,
                headWasFull: pending.count == configuration.passHeadLimit)
        }
    }

    /// What the active attempts of each host hold.
    func activeUsage(on connection: PostgresConnection) async throws -> [Int64: (cpu: Int, memory: Int64, gpus: Set<Int>)] {
        var used: [Int64: (cpu: Int, memory: Int64, gpus: Set<Int>)] = [:]
        for try await (host, cpu, memory, gpus) in try await connection.query(
            """
            select host_id, sum(cpu_millis)::bigint, sum(memory_bytes)::bigint, string_agg(array_to_string(gpu_indices, ','), ',')
            from attempts where state in ('assigned', 'running') group by host_id
            """, logger: logger
        ).decode((Int64, Int64, Int64, String?).self) {
            used[host] = (Int(cpu), memory, Set(Self.indices(gpus ?? "")))
        }
        return used
    }

    /// Active hosts with a fresh heartbeat, with what their active attempts leave free, and the facts the rules read
    /// of them: `hostFacts[host.policyKey]` describes every host with that key.
    func availableHosts(_ context: PolicyContext, on connection: PostgresConnection) async throws -> (hosts: [HostAvailability], hostFacts: [HostFacts]) {
        let used = try await activeUsage(on: connection)
        var hosts: [HostAvailability] = []
        var keys: [PolicyHostKey: Int] = [:]
        var facts: [HostFacts] = []
        var labelCache: [String: [String: String]] = [:]
        for try await (id, cpu, memory, gpusText, partner, region, labelsText, name) in try await connection.query(
            """
            select id, cpu_millis, memory_bytes, gpus::text, partner_id, region, labels::text, name from hosts
            where state = 'active' and last_heartbeat > now() - make_interval(secs => \(Double(configuration.hostTimeoutSeconds)))
            """, logger: logger
        ).decode((Int64, Int32, Int64, String, Int64, String, String, String).self) {
            let gpus = try gpuCache.gpus(host: id, json: gpusText)
            let usage = used[id] ?? (0, 0, [])
            let labels: [String: String]
            if let known = labelCache[labelsText] {
                labels = known
            } else {
                labels = try WireJSON.sharedDecoder.decode([String: String].self, from: Data(labelsText.utf8))
                labelCache[labelsText] = labels
            }
            let host = HostFacts(
                id: id, name: name, partner: context.partnerNames[partner] ?? "#\(partner)", region: region,
                jurisdiction: context.regionJurisdiction[region] ?? "?", labels: labels)
            let key: Int
            if let known = keys[host.policyKey] {
                key = known
            } else {
                key = facts.count
                keys[host.policyKey] = key
                facts.append(host)
            }
            hosts.append(
                HostAvailability(
                    id: id, freeCPUMillis: Int(cpu) - usage.cpu, freeMemoryBytes: memory - usage.memory,
                    freeGPUs: gpus.filter { !usage.gpus.contains($0.index) }, totalGPUs: gpus.count, partnerID: partner, policyKey: key))
        }
        return (hosts, facts)
    }

    /// Writes placements in one statement: it locks only the jobs being placed (not the whole head: row locks are
    /// written to disk) and skips any that stopped being queued since the head was read (a cancel committed in
    /// between), then inserts the attempts, updates the jobs, records the events and sends one `NOTIFY` per batch
    /// of hosts.
    ///
    /// - Returns: how many placements were written.
    func write(_ placements: [Placement], policyVersion: String, on connection: PostgresConnection) async throws -> Int {
        let jobs = placements.map(\.jobID)
        let hosts = placements.map(\.hostID)
        let gpus = placements.map { "{" + $0.gpuIndices.map(String.init).joined(separator: ",") + "}" }
        let rows = try await connection.query(
            """
            with p as (
                select * from unnest(\(jobs)::bigint[], \(hosts)::bigint[], \(gpus)::text[]) as p(job_id, host_id, gpus)
            ), locked as (
                select id, attempts, cpu_millis, memory_bytes from jobs
                where id = any(\(jobs)::bigint[]) and state = 'queued' for no key update
            ), a as (
                insert into attempts (job_id, host_id, number, cpu_millis, memory_bytes, gpu_indices, lease_expires_at, policy_version)
                select p.job_id, p.host_id, j.attempts + 1, j.cpu_millis, j.memory_bytes, p.gpus::integer[],
                       now() + make_interval(secs => \(Double(configuration.leaseSeconds))), \(policyVersion)
                from p join locked j on j.id = p.job_id
                returning id, job_id, host_id, number
            ), u as (
                update jobs j set state = 'assigned', current_attempt = a.id, attempts = a.number
                from a where j.id = a.job_id
            ), e as (
                insert into job_events (job_id, attempt_id, kind, message)
                select a.job_id, a.id, 'assigned', 'try ' || a.number || ': assigned to ' || h.name || ' (' || h.region || ') under rules ' || \(policyVersion)
                from a join hosts h on h.id = a.host_id
            ), placed as (
                select a.*, p.gpus, \(policyVersion)::text as policy from a join p on p.job_id = a.job_id
            ), audited as (
                \(unescaped: Self.auditRows(
                    kind: "'placed'", actor: "'scheduler'",
                    body: "json_build_object('attempt', x.id, 'try', x.number, 'gpus', x.gpus, 'class', case when j.partner_id = h.partner_id then 'own' else 'guest' end, 'permitted', j.permitted_jurisdictions)",
                    policy: "x.policy",
                    from: "placed"))
            ), woken as (
                select distinct host_id from a
            )
            select (select count(*) from a), pg_notify(\(Channel.assign), string_agg(host_id::text, ','))::text, (select n from audited)
            from (select host_id, (row_number() over (order by host_id)) / 500 as batch from woken) b
            group by batch
            """, logger: logger
        ).decode((Int64, String, Int64).self).collect()
        return Int(rows.first?.0 ?? 0)
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
                    -- for a row while it may hold the ledger's lock.
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
                select n from audited
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
