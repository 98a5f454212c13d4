import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO

/// Enrollment, heartbeats and the host list.
extension Store {
    /// Turns a one-time join token into a host and its agent credential, in one transaction.
    package func enroll(_ request: EnrollRequest) async throws -> EnrollResponse {
        guard Name.isValid(request.name) else {
            throw StoreError(.invalid, "expected a host name of letters, digits, '-', '_' or '.', got \"\(request.name)\"", field: "name")
        }
        try Self.validate(request.resources)
        let labels = String(decoding: try JSONEncoder().encode(request.labels), as: UTF8.self)
        let gpus = try Self.gpuJSON(request.resources.gpus)
        let runtime = try Self.runtimeJSON(request.resources.runtime)
        let runner = request.resources.runtime?.runner.rawValue ?? RunnerKind.process.rawValue
        return try await transaction { connection in
            let rows = try await connection.query(
                """
                update join_tokens set used_at = now()
                where token_hash = \(Self.hash(token: request.joinToken)) and used_at is null and expires_at > now()
                returning id, partner_id, region
                """, logger: logger
            ).decode((Int64, Int64, String).self).collect()
            guard let (tokenID, partnerID, region) = rows.first else {
                throw StoreError(.forbidden, "the join token is unknown, expired or already used; ask for a new one", field: "join_token")
            }
            let hostRows: [Int64]
            do {
                hostRows = try await connection.query(
                    """
                    insert into hosts (name, partner_id, region, cpu_millis, memory_bytes, gpus, labels, agent_version, last_heartbeat,
                                       runtime, runner)
                    values (\(request.name), \(partnerID), \(region), \(Int32(request.resources.cpuMillis)),
                            \(request.resources.memoryBytes), \(gpus)::jsonb, \(labels)::jsonb, \(request.agentVersion), now(),
                            \(runtime)::jsonb, \(runner))
                    returning id
                    """, logger: logger
                ).decode(Int64.self).collect()
            } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
                throw StoreError(.conflict, "the partner has a host named \(request.name) already; pick another --name", field: "name")
            }
            let hostID = hostRows[0]
            try await connection.query("update join_tokens set host_id = \(hostID) where id = \(tokenID)", logger: logger)
            let credential = try await createPrincipal(
                name: "agent-\(request.name)", role: .agent, partnerID: partnerID, projectID: nil, hostID: hostID, on: connection)
            let partner = try await connection.query("select name from partners where id = \(partnerID)", logger: logger).decode(String.self).collect()
            try await audit(
                "host-enrolled", actor: "join-token:\(tokenID)", host: hostID, partners: partner, region: region,
                body: .object([
                    "host": .string(request.name), "cpu_millis": .number(Double(request.resources.cpuMillis)),
                    "memory_bytes": .number(Double(request.resources.memoryBytes)),
                    "gpus": .array(request.resources.gpus.map { .string("\($0.model) \($0.uuid)") }),
                    "labels": .object(request.labels.mapValues(JSONValue.string)), "agent_version": .string(request.agentVersion),
                ]),
                on: connection)
            try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger)
            logger.info("host enrolled", metadata: ["host.id": "\(hostID)", "host.name": "\(request.name)", "region": "\(region)"])
            return EnrollResponse(
                hostId: hostID, hostName: request.name, token: credential.token, heartbeatSeconds: configuration.heartbeatSeconds,
                leaseSeconds: configuration.leaseSeconds)
        }
    }

    static func validate(_ resources: HostResources) throws {
        guard resources.cpuMillis >= 0, resources.cpuMillis <= 100_000_000 else {
            throw StoreError(.invalid, "expected 0 to 100000 CPUs", field: "resources.cpu_millis")
        }
        guard resources.memoryBytes >= 0 else { throw StoreError(.invalid, "expected a size of at least 0", field: "resources.memory_bytes") }
        let indices = resources.gpus.map(\.index)
        guard Set(indices).count == indices.count, indices.allSatisfy({ $0 >= 0 && $0 < 1024 }) else {
            throw StoreError(.invalid, "expected distinct GPU indices from 0 to 1023", field: "resources.gpus")
        }
    }

    /// The runtime report as JSON text, or `nil`.
    static func runtimeJSON(_ runtime: HostRuntime?) throws -> String? {
        guard let runtime else { return nil }
        return String(decoding: try WireJSON.shared.encode(runtime), as: UTF8.self)
    }

    static func gpuJSON(_ gpus: [GPU]) throws -> String {
        String(decoding: try WireJSON.shared.encode(gpus.sorted { $0.index < $1.index }), as: UTF8.self)
    }

    /// Records a heartbeat: the host is alive, the listed attempts' leases are renewed.
    ///
    /// One statement (atomic on its own): heartbeats are the most frequent call of a large pool.
    ///
    /// - Returns: the attempts among `attempts` that the agent must stop (cancelled, fenced off, or unknown).
    package func heartbeat(host: Int64, _ request: HeartbeatRequest) async throws -> [Int64] {
        if let resources = request.resources {
            try Self.validate(resources)
            try await client.query(
                """
                update hosts set cpu_millis = \(Int32(resources.cpuMillis)), memory_bytes = \(resources.memoryBytes),
                    gpus = \(try Self.gpuJSON(resources.gpus))::jsonb,
                    runtime = coalesce(\(try Self.runtimeJSON(resources.runtime))::jsonb, runtime),
                    runner = coalesce(\(resources.runtime?.runner.rawValue), runner)
                where id = \(host)
                """, logger: logger)
        }
        // Service replicas' health (one statement; attempts of other hosts or that ended are left alone).
        if let services = request.services, !services.isEmpty { try await recordServiceStatus(host: host, services) }
        let rows = try await run(
            HeartbeatStatement.self,
            Self.heartbeatQuery(
                host: host, attempts: request.attempts, leaseSeconds: Double(configuration.leaseSeconds), resourcesChanged: request.resources != nil)
        ).map { try $0.decode(([Int64], Int64).self) }
        let kept = Set(rows.first?.0 ?? [])
        return request.attempts.filter { !kept.contains($0) }
    }

    enum HeartbeatStatement: HotStatement {
        static let sql = Store.heartbeatQuery(host: 0, attempts: [], leaseSeconds: 0, resourcesChanged: false).sql
    }

    /// The heartbeat's statement: the host's liveness, the leases of `attempts` still its to run, a wake-up of the
    /// scheduler when the host came back or its resources changed, and the ledger's `host-up`.
    ///
    /// Its implicit transaction commits without waiting for the WAL flush (`synchronous_commit` off for it alone): an
    /// idle pool of 1,000 agents heartbeats 200 times a second, and each waited for an fsync that the changes around
    /// it (submissions, passes, starts) then queued behind. A crash can lose the last fraction of a second of them,
    /// which the next heartbeat repeats; the host's revival and its ledger entry are lost or kept together.
    package static func heartbeatQuery(host: Int64, attempts: [Int64], leaseSeconds: Double, resourcesChanged: Bool) -> PostgresQuery {
        """
        with async as (
            select set_config('synchronous_commit', 'off', true)
        ), old as (
            select state from hosts where id = \(host) for no key update
        ), h as (
            update hosts h set last_heartbeat = now(), state = case when h.state = 'down' then 'active' else h.state end
            from old where h.id = \(host) returning old.state = 'down' as revived
        ), kept as (
            select a.id, a.lease_expires_at from attempts a join jobs j on j.id = a.job_id
            where a.id = any(\(attempts)::bigint[]) and a.host_id = \(host) and a.state in ('assigned', 'running')
              and j.current_attempt = a.id and not j.cancel_requested
        ), renewed as (
            -- A lease is rewritten only once half of it is used: most heartbeats write nothing.
            update attempts a set lease_expires_at = now() + make_interval(secs => \(leaseSeconds))
            from kept where a.id = kept.id
              and kept.lease_expires_at < now() + make_interval(secs => \(leaseSeconds / 2))
            returning a.id
        ), wake as (
            select pg_notify(\(Channel.scheduler), '') from h where h.revived or \(resourcesChanged)
        ), audited as (
            select audit_append1('host-up', 'agent', null, hs.id, p.name, hs.region, '', '', '{"reason":"heartbeat after down"}')
            from h join hosts hs on hs.id = \(host) join partners p on p.id = hs.partner_id
            where h.revived and (select count(*) from renewed) >= 0
        )
        select coalesce((select array_agg(id) from kept), '{}'::bigint[]),
               (select count(*) from wake) + (select count(*) from audited) + (select count(*) from async)
        """
    }

    /// Hosts with what is allocated on them. Every human role sees the whole pool (like `sinfo`): hosts carry no
    /// job details, only counts; `partnerID`/`hostID` narrow the list.
    package func hosts(partnerID: Int64? = nil, hostID: Int64? = nil) async throws -> [HostView] {
        let rows = try await client.query(
            """
            select h.id, h.name, pa.name, h.region, r.jurisdiction, h.state, h.cpu_millis, h.memory_bytes, h.gpus::text,
                   h.labels::text, coalesce(u.cpu, 0), coalesce(u.mem, 0), coalesce(u.gpus, ''), coalesce(u.n, 0),
                   h.last_heartbeat, h.enrolled_at, h.agent_version, h.runtime::text
            from hosts h
            join partners pa on pa.id = h.partner_id
            join regions r on r.name = h.region
            left join lateral (
                select sum(cpu_millis)::bigint cpu, sum(memory_bytes)::bigint mem, count(*) n,
                       string_agg(array_to_string(gpu_indices, ','), ',') gpus
                from attempts where host_id = h.id and state in ('assigned', 'running')
            ) u on true
            where (\(partnerID)::bigint is null or h.partner_id = \(partnerID))
              and (\(hostID)::bigint is null or h.id = \(hostID))
            order by h.region, h.name
            """, logger: logger)
        var hosts: [HostView] = []
        let decoder = WireJSON.sharedDecoder
        for try await row in rows {
            let r = row.makeRandomAccess()
            let gpus = try decoder.decode([GPU].self, from: Data(try r[8].decode(String.self).utf8))
            let labels = try JSONDecoder().decode([String: String].self, from: Data(try r[9].decode(String.self).utf8))
            let runtime = try r[17].decode(String?.self).map { try decoder.decode(HostRuntime.self, from: Data($0.utf8)) }
            hosts.append(
                HostView(
                    id: try r[0].decode(Int64.self), name: try r[1].decode(String.self), partner: try r[2].decode(String.self),
                    region: try r[3].decode(String.self), jurisdiction: try r[4].decode(String.self),
                    state: HostState(rawValue: try r[5].decode(String.self)) ?? .down,
                    resources: HostResources(
                        cpuMillis: Int(try r[6].decode(Int32.self)), memoryBytes: try r[7].decode(Int64.self), gpus: gpus,
                        runtime: runtime),
                    labels: labels, allocatedCpuMillis: Int(try r[10].decode(Int64.self)), allocatedMemoryBytes: try r[11].decode(Int64.self),
                    allocatedGpus: Self.indices(try r[12].decode(String.self)), runningAttempts: Int(try r[13].decode(Int64.self)),
                    lastHeartbeat: try r[14].decode(Date?.self), enrolledAt: try r[15].decode(Date.self),
                    agentVersion: try r[16].decode(String?.self)))
        }
        return hosts
    }

    /// Parses `"0,1,,3"` (string_agg of index lists) into indices.
    static func indices(_ text: String) -> [Int] {
        text.split(separator: ",").compactMap { Int($0) }.sorted()
    }
}

