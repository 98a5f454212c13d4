import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO

/// What agents report of service replicas, the endpoints and gateway targets read from it, and the controller that
/// keeps `replicas` copies of every service running.
extension Store {
    /// The longest URL and message an agent may report for a replica.
    static let maxServiceURLBytes = 2_048
    static let maxServiceMessageCharacters = 1_000

    /// Stores what the agent of `host` reports of the service replicas it runs (one statement). Reports of attempts
    /// that are not this host's, or that ended, change nothing.
    ///
    /// - Throws: ``StoreError`` `.invalid` naming the field when a URL is not `http://` or `https://`.
    package func recordServiceStatus(host: Int64, _ statuses: [ServiceStatus]) async throws {
        guard !statuses.isEmpty else { return }
        for (index, status) in statuses.enumerated() {
            if let url = status.url,
                !(url.hasPrefix("http://") || url.hasPrefix("https://")) || url.utf8.count > Self.maxServiceURLBytes || url.contains(where: \.isWhitespace)
            {
                throw StoreError(.invalid, "expected an http:// or https:// URL of at most \(Self.maxServiceURLBytes) bytes", field: "services[\(index)].url")
            }
            guard status.restarts >= 0 else {
                throw StoreError(.invalid, "expected 0 or more, got \(status.restarts)", field: "services[\(index)].restarts")
            }
        }
        let attempts = statuses.map(\.attempt)
        let urls = statuses.map { $0.url ?? "" }
        let healthy = statuses.map(\.healthy)
        let restarts = statuses.map { Int32(clamping: $0.restarts) }
        let messages = statuses.map { String(($0.message ?? "").prefix(Self.maxServiceMessageCharacters)) }
        try await client.query(
            """
            update attempts a set url = nullif(s.url, ''), healthy = s.healthy, restarts = s.restarts, health_message = nullif(s.message, ''),
                checked_at = now()
            from unnest(\(attempts)::bigint[], \(urls)::text[], \(healthy)::boolean[], \(restarts)::int[], \(messages)::text[])
                as s(id, url, healthy, restarts, message)
            where a.id = s.id and a.host_id = \(host) and a.state in ('assigned', 'running')
            """, logger: logger)
    }

    /// A healthy replica with the facts the rules read of its host.
    package struct ReplicaTarget: Sendable {
        package var endpoint: Endpoint
        package var host: HostFacts

        /// A replica from the columns both replica queries read (`labels` is the host's labels as JSON text).
        init(
            replica: Int32, job: Int64, attempt: Int64, host: String, region: String, jurisdiction: String, url: String,
            restarts: Int32, checkedAt: Date, partner: Int64, labels: String, context: PolicyContext
        ) throws {
            endpoint = Endpoint(
                replica: Int(replica), job: job, attempt: attempt, host: host, region: region, jurisdiction: jurisdiction, url: url,
                restarts: Int(restarts), checkedAt: checkedAt)
            self.host = HostFacts(
                id: 0, name: host, partner: context.partnerNames[partner] ?? "#\(partner)", region: region, jurisdiction: jurisdiction,
                labels: try WireJSON.sharedDecoder.decode([String: String].self, from: Data(labels.utf8)))
        }
    }

    /// Healthy replicas of a service: their job and attempt run, the agent's last report of them said healthy and
    /// gave a URL, and their host is active with a fresh heartbeat.
    func healthyReplicas(_ service: ServiceRow, context: PolicyContext, on connection: PostgresConnection) async throws -> [ReplicaTarget] {
        var targets: [ReplicaTarget] = []
        for try await (replica, job, attempt, host, region, jurisdiction, url, restarts, checkedAt, partner, labels) in try await connection.query(
            """
            select j.replica, j.id, a.id, h.name, h.region, r.jurisdiction, a.url, a.restarts, a.checked_at, h.partner_id, h.labels::text
            from jobs j
            join attempts a on a.id = j.current_attempt
            join hosts h on h.id = a.host_id
            join regions r on r.name = h.region
            where j.service_id = \(service.id) and j.state = 'running' and a.state = 'running' and a.healthy and a.url is not null
              and h.state = 'active' and h.last_heartbeat > now() - make_interval(secs => \(Double(configuration.hostTimeoutSeconds)))
            order by j.replica
            """, logger: logger
        ).decode((Int32, Int64, Int64, String, String, String, String, Int32, Date, Int64, String).self) {
            targets.append(
                try ReplicaTarget(
                    replica: replica, job: job, attempt: attempt, host: host, region: region, jurisdiction: jurisdiction, url: url,
                    restarts: restarts, checkedAt: checkedAt, partner: partner, labels: labels, context: context))
        }
        return targets
    }

    /// The healthy replicas of a service (`comity endpoints`), or `nil` when it is not visible in `scope`.
    package func endpoints(_ reference: String, scope: JobScope) async throws -> EndpointList? {
        try await client.withConnection { connection in
            guard let service = try await serviceRow(reference, scope: scope, on: connection) else { return nil }
            let context = try await policyContext(on: connection)
            let targets = try await healthyReplicas(service, context: context, on: connection)
            return EndpointList(service: service.name, project: service.project, endpoints: targets.map(\.endpoint))
        }
    }

    /// What the gateway needs for one request: the service, its healthy replicas and the rules in force.
    package struct GatewayTargets: Sendable {
        package var service: String
        package var project: String
        package var replicas: [ReplicaTarget]
        package var policies: ActivePolicies
    }

    /// The gateway's view of a service, or `nil` when `principal` cannot see it.
    ///
    /// One round trip on the common path: the service, its healthy replicas and the rules' generation come in one
    /// statement, and the rules themselves from the store's cache while their generation holds.
    ///
    /// - Throws: ``StoreError`` `.forbidden` when `principal` sees it but is not a member of its project (an
    ///   auditor); `.conflict` when the name is ambiguous.
    package func gatewayTargets(_ reference: String, principal: Principal) async throws -> GatewayTargets? {
        let parts = reference.split(separator: ":", maxSplits: 1).map(String.init)
        let project = parts.count == 2 ? parts[0] : nil
        let name = parts.count == 2 ? parts[1] : reference
        let scope = JobScope(principal)
        let (partnerID, projectID) = scope.filters
        return try await client.withConnection { connection in
            let rows = try await connection.query(
                """
                select s.id, s.project_id, s.partner_id, pr.name, (select generation from policy_state),
                       x.replica, x.job, x.attempt, x.host, x.region, x.jurisdiction, x.url, x.restarts, x.checked_at, x.partner_id, x.labels
                from services s
                join projects pr on pr.id = s.project_id
                left join lateral (
                    select j.replica, j.id as job, a.id as attempt, h.name as host, h.region, r.jurisdiction, a.url, a.restarts, a.checked_at,
                           h.partner_id, h.labels::text as labels
                    from jobs j
                    join attempts a on a.id = j.current_attempt
                    join hosts h on h.id = a.host_id
                    join regions r on r.name = h.region
                    where j.service_id = s.id and j.state = 'running' and a.state = 'running' and a.healthy and a.url is not null
                      and h.state = 'active' and h.last_heartbeat > now() - make_interval(secs => \(Double(configuration.hostTimeoutSeconds)))
                ) x on true
                where s.name = \(name) and (\(project)::text is null or pr.name = \(project))
                  and (\(partnerID)::bigint is null or s.partner_id = \(partnerID))
                  and (\(projectID)::bigint is null or s.project_id = \(projectID))
                  and \(scope != .none)
                order by s.id, x.replica
                """, logger: logger
            ).decode(
                (Int64, Int64, Int64, String, Int64, Int32?, Int64?, Int64?, String?, String?, String?, String?, Int32?, Date?, Int64?, String?).self
            ).collect()
            guard let first = rows.first else { return nil }
            let projects = Set(rows.map(\.0))
            guard projects.count == 1 else {
                throw StoreError(.conflict, "service \(name) exists in several projects; name it as PROJECT:\(name)", field: "name")
            }
            guard Self.isMember(principal, project: first.1, partner: first.2) else {
                throw StoreError(.forbidden, "\(principal.role.rawValue) \(principal.name) may not call services of project \(first.3)")
            }
            let context = try await policyContext(on: connection, knownGeneration: first.4)
            var replicas: [ReplicaTarget] = []
            for row in rows {
                guard let replica = row.5, let job = row.6, let attempt = row.7, let host = row.8, let region = row.9, let jurisdiction = row.10,
                    let url = row.11, let restarts = row.12, let checkedAt = row.13, let partner = row.14, let labels = row.15
                else { continue }
                replicas.append(
                    try ReplicaTarget(
                        replica: replica, job: job, attempt: attempt, host: host, region: region, jurisdiction: jurisdiction, url: url,
                        restarts: restarts, checkedAt: checkedAt, partner: partner, labels: labels, context: context))
            }
            return GatewayTargets(service: name, project: first.3, replicas: replicas, policies: context.active())
        }
    }

    // MARK: Keeping replicas running

    static let serviceControllerLockKey: Int64 = 0x636f_6d69_7479_08

    /// What one round of the service controller did.
    package struct ReconcileResult: Sendable, Equatable {
        /// New jobs for replicas whose job ended.
        package var replaced: Int
        /// Jobs of replica indices at or above their service's count that were still live (after an interrupted scale).
        package var cancelled: Int
    }

    /// One round of the service controller: every replica index below its service's count whose newest job ended gets
    /// a new job, when ``ServiceRouting/replaces(_:state:exitCode:)`` says so and its back-off
    /// (``ServiceRouting/backoffSeconds(recentEnds:)``) has passed; live jobs of indices at or above the count are
    /// cancelled. Any number of replicas may run it: a round that finds another running skips (advisory lock).
    @discardableResult
    package func reconcileServices() async throws -> ReconcileResult {
        let controller = Principal(id: 0, name: "service-controller", role: .admin)
        let (replaced, strays): (Int, [Int64]) = try await transaction { connection in
            let locked = try await connection.query("select pg_try_advisory_xact_lock(\(Self.serviceControllerLockKey))", logger: logger)
                .decode(Bool.self).collect().first ?? false
            guard locked else { return (0, []) }
            let ended = try await connection.query(
                """
                select s.id, i.replica, last.state, last.exit_code,
                       coalesce(extract(epoch from now() - last.finished_at), 1e9)::float8,
                       (select count(*) from jobs e where e.service_id = s.id and e.replica = i.replica
                          and e.finished_at > now() - make_interval(secs => \(Double(ServiceRouting.backoffWindowSeconds))))
                from services s
                cross join lateral generate_series(0, s.replicas - 1) as i(replica)
                cross join lateral (
                    select j.state, j.exit_code, j.finished_at from jobs j where j.service_id = s.id and j.replica = i.replica
                    order by j.id desc limit 1
                ) last
                where s.replicas > 0 and last.state in ('succeeded', 'failed', 'cancelled')
                order by s.id, i.replica
                """, logger: logger
            ).decode((Int64, Int32, String, Int32?, Double, Int64).self).collect()
            let due = Set(ended.map(\.0))
            var replaced = 0
            if !due.isEmpty {
                var rows: [Int64: ServiceRow] = [:]
                for try await row in try await connection.query(
                    "select \(unescaped: Self.serviceColumns) \(unescaped: Self.serviceJoins) where s.id = any(\(Array(due))::bigint[])",
                    logger: logger)
                {
                    let service = try Self.serviceRow(row)
                    rows[service.id] = service
                }
                for (serviceID, replica, state, exitCode, sinceEnd, recent) in ended {
                    guard let service = rows[serviceID] else { continue }
                    let policy = service.spec.service?.restart ?? .always
                    guard ServiceRouting.replaces(policy, state: JobState(rawValue: state) ?? .failed, exitCode: exitCode),
                        sinceEnd >= Double(ServiceRouting.backoffSeconds(recentEnds: Int(recent)))
                    else { continue }
                    let submitter = Principal(id: service.createdBy, name: "service-controller", role: .admin)
                    do {
                        replaced += try await insertReplicas(service, indices: [Int(replica)], actor: submitter, on: connection).count
                    } catch let error as StoreError where error.code == .rejected {
                        // The rules changed and can no longer admit the service anywhere: it stays short of replicas,
                        // and `comity services show` says why through the ended job.
                        logger.warning("service replica not replaced: the rules reject it", metadata: [
                            "service.id": "\(serviceID)", "replica": "\(replica)", "error": "\(error.message)",
                        ])
                    }
                }
            }
            // Replicas beyond each service's count, read service by service through `jobs_service`: as a join of
            // `jobs` with `services`, PostgreSQL scanned every job (37 ms a second after 50,000 jobs, with no service).
            let strays = try await connection.query(
                """
                select j.id from services s
                cross join lateral (
                    select id, state, cancel_requested from jobs where service_id = s.id and replica >= s.replicas
                ) j
                where j.state in ('queued', 'assigned', 'running') and not j.cancel_requested
                order by j.id
                """, logger: logger
            ).decode(Int64.self).collect()
            if replaced > 0 { try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger) }
            return (replaced, strays)
        }
        for job in strays { _ = try await cancel(job: job, scope: .all, by: controller) }
        if replaced > 0 || !strays.isEmpty {
            logger.info("services reconciled", metadata: ["replaced": "\(replaced)", "cancelled": "\(strays.count)"])
        }
        return ReconcileResult(replaced: replaced, cancelled: strays.count)
    }
}
