import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO

/// Services (`kind: inference` job files): one row in `services`, run as `replicas` replica jobs, each on its own
/// host (the pass's spread rule). Scaling adds replica jobs or cancels the highest-numbered ones; replicas that end
/// are replaced by ``reconcileServices()``.
extension Store {
    /// A service's row.
    struct ServiceRow: Sendable {
        var id: Int64
        var projectID: Int64
        var partnerID: Int64
        var project: String
        var partner: String
        var name: String
        var spec: JobSpec
        var replicas: Int
        var createdBy: Int64
    }

    static let serviceColumns = """
        s.id, s.project_id, s.partner_id, pr.name, pa.name, s.name, s.spec::text, s.replicas, s.created_by
        """
    static let serviceJoins = """
        from services s join projects pr on pr.id = s.project_id join partners pa on pa.id = s.partner_id
        """

    static func serviceRow(_ row: PostgresRow) throws -> ServiceRow {
        let (id, project, partner, projectName, partnerName, name, specText, replicas, createdBy) = try row.decode(
            (Int64, Int64, Int64, String, String, String, String, Int32, Int64).self)
        return ServiceRow(
            id: id, projectID: project, partnerID: partner, project: projectName, partner: partnerName, name: name,
            spec: try WireJSON.sharedDecoder.decode(JobSpec.self, from: Data(specText.utf8)), replicas: Int(replicas), createdBy: createdBy)
    }

    /// Whether `principal` may submit, scale or call a service of this project (its members and admins).
    static func isMember(_ principal: Principal, project: Int64, partner: Int64) -> Bool {
        switch principal.role {
        case .admin: true
        case .researcher: principal.projectID == project
        case .partnerAdmin: principal.partnerID == partner
        case .auditor, .agent: false
        }
    }

    /// The service `reference` names (`name`, or `project:name` when names repeat across projects) in `scope`.
    ///
    /// - Returns: `nil` when there is none in scope (a service outside the scope is indistinguishable from none).
    /// - Throws: ``StoreError`` `.conflict` when `name` matches services of several projects in scope.
    func serviceRow(_ reference: String, scope: JobScope, lock: Bool = false, on connection: PostgresConnection) async throws -> ServiceRow? {
        let parts = reference.split(separator: ":", maxSplits: 1).map(String.init)
        let project = parts.count == 2 ? parts[0] : nil
        let name = parts.count == 2 ? parts[1] : reference
        let (partnerID, projectID) = scope.filters
        var rows: [ServiceRow] = []
        for try await row in try await connection.query(
            """
            select \(unescaped: Self.serviceColumns) \(unescaped: Self.serviceJoins)
            where s.name = \(name) and (\(project)::text is null or pr.name = \(project))
              and (\(partnerID)::bigint is null or s.partner_id = \(partnerID))
              and (\(projectID)::bigint is null or s.project_id = \(projectID))
              and \(scope != .none)
            order by s.id
            \(unescaped: lock ? "for no key update of s" : "")
            """, logger: logger)
        {
            rows.append(try Self.serviceRow(row))
        }
        if rows.count > 1 {
            let projects = rows.map(\.project).joined(separator: ", ")
            throw StoreError(.conflict, "service \(name) exists in projects \(projects); name it as PROJECT:\(name)", field: "name")
        }
        return rows.first
    }

    // MARK: Submitting and scaling

    /// Stores a service and its replica jobs in one transaction and wakes the scheduler.
    ///
    /// A name already used in the project is taken over (spec and replicas replaced) only when none of its replicas
    /// is queued or running; otherwise it is a conflict (scale it, or scale it to 0 first).
    ///
    /// - Returns: the service id and the new replica jobs, in replica order.
    /// - Throws: ``StoreError`` `.forbidden` for non-members, `.conflict` for a running service of the same name,
    ///   `.rejected` when the rules can never admit it.
    package func submitService(_ spec: JobSpec, by principal: Principal) async throws -> (service: Int64, jobs: [Int64]) {
        guard let service = spec.service, spec.kind == .inference else {
            throw StoreError(.invalid, "a service is a job with kind: inference", field: "kind")
        }
        let ids = try await projectIDs(spec.project, field: "project")
        guard Self.isMember(principal, project: ids.project, partner: ids.partner) else {
            throw StoreError(.forbidden, "\(principal.role.rawValue) \(principal.name) may not submit to project \(spec.project)", field: "project")
        }
        let document = String(decoding: try WireJSON.shared.encode(spec), as: UTF8.self)
        return try await transaction { connection in
            let existing = try await connection.query(
                """
                select s.id, exists (select 1 from jobs j where j.service_id = s.id and j.state in ('queued', 'assigned', 'running'))
                from services s where s.project_id = \(ids.project) and s.name = \(spec.name) for no key update
                """, logger: logger
            ).decode((Int64, Bool).self).collect()
            let serviceID: Int64
            if let (id, live) = existing.first {
                guard !live else {
                    throw StoreError(
                        .conflict,
                        "service \(spec.name) of project \(spec.project) is running; change its replicas with comity services scale, or scale it to 0 before submitting it again",
                        field: "name")
                }
                try await connection.query(
                    """
                    update services set spec = \(document)::jsonb, replicas = \(Int32(service.replicas)), updated_at = now(),
                        created_by = \(principal.id)
                    where id = \(id)
                    """, logger: logger)
                serviceID = id
            } else {
                do {
                    serviceID = try await connection.query(
                        """
                        insert into services (project_id, partner_id, name, spec, replicas, created_by)
                        values (\(ids.project), \(ids.partner), \(spec.name), \(document)::jsonb, \(Int32(service.replicas)), \(principal.id))
                        returning id
                        """, logger: logger
                    ).decode(Int64.self).collect()[0]
                } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
                    throw StoreError(.conflict, "service \(spec.name) of project \(spec.project) was just created by someone else", field: "name")
                }
            }
            let row = ServiceRow(
                id: serviceID, projectID: ids.project, partnerID: ids.partner, project: spec.project, partner: "", name: spec.name, spec: spec,
                replicas: service.replicas, createdBy: principal.id)
            // The service's rows, then their ledger entries.
            let jobs = try await insertReplicas(row, indices: Array(0..<service.replicas), actor: principal, on: connection)
            try await audit(
                existing.isEmpty ? "service-created" : "service-replaced", actor: principal.name,
                partners: [try await partnerName(ids.partner, on: connection)],
                body: .object([
                    "service": .string(spec.name), "project": .string(spec.project), "replicas": .number(Double(service.replicas)),
                    "jobs": .array(jobs.map { .number(Double($0)) }),
                ]),
                on: connection)
            try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger)
            return (serviceID, jobs)
        }
    }

    func partnerName(_ id: Int64, on connection: PostgresConnection) async throws -> String {
        try await connection.query("select name from partners where id = \(id)", logger: logger).decode(String.self).collect().first ?? "#\(id)"
    }

    /// Sets a service's replicas: adds replica jobs for every index below `replicas` that has no queued or running
    /// job (whatever the restart policy or back-off), and cancels the jobs of indices at or above it, highest first.
    ///
    /// - Returns: the service after the change, or `nil` when it is not visible in `scope`.
    /// - Throws: ``StoreError`` `.invalid` for a count outside 0...64, `.forbidden` for non-members.
    package func scaleService(_ reference: String, replicas: Int, scope: JobScope, by principal: Principal) async throws -> ServiceView? {
        guard ServiceSpec.Limits.scaleReplicas.contains(replicas) else {
            throw StoreError(
                .invalid,
                "expected \(ServiceSpec.Limits.scaleReplicas.lowerBound) to \(ServiceSpec.Limits.scaleReplicas.upperBound), got \(replicas)",
                field: "replicas")
        }
        let stopping: [Int64]? = try await transaction { connection in
            guard let row = try await serviceRow(reference, scope: scope, lock: true, on: connection) else { return nil }
            guard Self.isMember(principal, project: row.projectID, partner: row.partnerID) else {
                throw StoreError(.forbidden, "\(principal.role.rawValue) \(principal.name) may not scale services of project \(row.project)")
            }
            try await connection.query(
                "update services set replicas = \(Int32(replicas)), updated_at = now() where id = \(row.id)", logger: logger)
            let live = try await connection.query(
                """
                select id, replica from jobs
                where service_id = \(row.id) and state in ('queued', 'assigned', 'running')
                order by replica desc, id
                """, logger: logger
            ).decode((Int64, Int32).self).collect()
            let running = Set(live.map { Int($0.1) })
            let missing = (0..<replicas).filter { !running.contains($0) }
            var updated = row
            updated.replicas = replicas
            let added = missing.isEmpty ? [] : try await insertReplicas(updated, indices: missing, actor: principal, on: connection)
            let stopping = live.filter { Int($0.1) >= replicas }.map(\.0)
            try await audit(
                "service-scaled", actor: principal.name, partners: [row.partner],
                body: .object([
                    "service": .string(row.name), "project": .string(row.project), "from": .number(Double(row.replicas)),
                    "to": .number(Double(replicas)), "added": .array(added.map { .number(Double($0)) }),
                    "stopping": .array(stopping.map { .number(Double($0)) }),
                ]),
                on: connection)
            if !added.isEmpty { try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger) }
            return stopping
        }
        guard let stopping else { return nil }
        for job in stopping { _ = try await cancel(job: job, scope: .all, by: principal) }
        return try await service(reference, scope: scope)
    }

    /// Inserts one replica job per index (the service's spec with `COMITY_SERVICE` and `COMITY_REPLICA` set), with the
    /// jurisdictions the rules permit, a `submitted` event and ledger entry each, on `connection`.
    ///
    /// - Returns: the new jobs' ids in index order.
    func insertReplicas(_ service: ServiceRow, indices: [Int], actor: Principal, on connection: PostgresConnection) async throws -> [Int64] {
        guard !indices.isEmpty else { return [] }
        let specs = indices.map { index in
            var copy = service.spec
            copy.env["COMITY_SERVICE"] = service.name
            copy.env["COMITY_REPLICA"] = String(index)
            return copy
        }
        let permitted = try await admit(specs, project: service.projectID, partner: service.partnerID, on: connection).map { $0 ?? "" }
        let documents = try specs.map { String(decoding: try WireJSON.shared.encode($0), as: UTF8.self) }
        let replicas = indices.map(Int32.init)
        let message = "replica of service \(service.name), submitted by \(actor.name)"
        return try await connection.query(
            """
            with input as (
                select * from unnest(\(documents)::text[], \(permitted)::text[], \(replicas)::int[]) with ordinality as i(doc, permitted, replica, n)
            ), inserted as (
                insert into jobs (project_id, partner_id, submitted_by, name, kind, spec, priority, cpu_millis, memory_bytes,
                                  gpus, gpu_model, gpu_memory_bytes, retries, inputs, max_runtime_seconds, permitted_jurisdictions, preemptible,
                                  service_id, replica)
                select \(service.projectID), \(service.partnerID), \(actor.id), d->>'name', d->>'kind', d, (d->>'priority')::int,
                       (d->'resources'->>'cpu_millis')::int, (d->'resources'->>'memory_bytes')::bigint,
                       (d->'resources'->>'gpus')::int, d->'resources'->>'gpu_model',
                       (d->'resources'->>'gpu_memory_bytes')::bigint, (d->>'retries')::int,
                       array(select jsonb_array_elements_text(d->'inputs')), (d->>'max_runtime_seconds')::bigint, nullif(permitted, '')::text[],
                       coalesce((d->>'preemptible')::boolean, d->>'kind' <> 'inference'), \(service.id), replica
                from (select doc::jsonb as d, permitted, replica, n from input order by n) s
                returning id, name, kind, inputs, permitted_jurisdictions, priority, replica
            ), events as (
                insert into job_events (job_id, kind, message)
                select id, 'submitted', \(message) || ' (replica ' || replica || ')' from inserted
            ), who as (
                select \(actor.name)::text as actor, \(service.name)::text as service, pr.name as project, pa.name as partner
                from projects pr join partners pa on pa.id = pr.partner_id where pr.id = \(service.projectID)
            ), audited as (
                \(unescaped: Self.auditSubmitted(
                    body: "json_build_object('name', x.name, 'project', w.project, 'kind', x.kind, 'priority', x.priority, 'permitted', x.permitted_jurisdictions, 'service', w.service, 'replica', x.replica)"))
            )
            select id from inserted order by replica
            """, logger: logger
        ).decode(Int64.self).collect()
    }

    // MARK: Reading

    /// Services visible in `scope` (optionally of one project), by project and name.
    package func services(scope: JobScope, project: String? = nil) async throws -> [ServiceView] {
        try await client.withConnection { connection in
            let (partnerID, projectID) = scope.filters
            var rows: [ServiceRow] = []
            for try await row in try await connection.query(
                """
                select \(unescaped: Self.serviceColumns) \(unescaped: Self.serviceJoins)
                where (\(partnerID)::bigint is null or s.partner_id = \(partnerID))
                  and (\(projectID)::bigint is null or s.project_id = \(projectID))
                  and (\(project)::text is null or pr.name = \(project))
                  and \(scope != .none)
                order by pr.name, s.name
                """, logger: logger)
            {
                rows.append(try Self.serviceRow(row))
            }
            return try await views(rows, on: connection)
        }
    }

    /// One service with its replicas, or `nil` when it is not visible in `scope`.
    package func service(_ reference: String, scope: JobScope) async throws -> ServiceView? {
        try await client.withConnection { connection in
            guard let row = try await serviceRow(reference, scope: scope, on: connection) else { return nil }
            return try await views([row], on: connection).first
        }
    }

    /// The views of `rows`: each replica index's newest job, and jobs of higher indices still being stopped.
    func views(_ rows: [ServiceRow], on connection: PostgresConnection) async throws -> [ServiceView] {
        guard !rows.isEmpty else { return [] }
        let ids = rows.map(\.id)
        var replicas: [Int64: [ReplicaView]] = [:]
        let decoded = try await connection.query(
            """
            select distinct on (j.service_id, j.replica) j.service_id, j.replica, j.id, j.state, j.current_attempt, h.name, h.region,
                   r.jurisdiction, a.url, a.healthy, a.restarts, coalesce(a.health_message, j.reason), a.checked_at
            from jobs j
            left join attempts a on a.id = j.current_attempt
            left join hosts h on h.id = a.host_id
            left join regions r on r.name = h.region
            where j.service_id = any(\(ids)::bigint[])
            order by j.service_id, j.replica, j.id desc
            """, logger: logger
        ).decode((Int64, Int32, Int64, String, Int64?, String?, String?, String?, String?, Bool?, Int32?, String?, Date?).self).collect()
        for (service, index, job, stateText, attempt, host, region, jurisdiction, url, healthy, restarts, message, checkedAt) in decoded {
            let state = JobState(rawValue: stateText) ?? .queued
            let running = state == .running
            replicas[service, default: []].append(
                ReplicaView(
                    index: Int(index), job: job, state: state, attempt: attempt, host: state.holdsHost ? host : nil,
                    region: state.holdsHost ? region : nil, jurisdiction: state.holdsHost ? jurisdiction : nil, url: running ? url : nil,
                    healthy: running ? healthy : nil, restarts: Int(restarts ?? 0), message: message, checkedAt: running ? checkedAt : nil))
        }
        let meta = try await connection.query(
            """
            select s.id, p.name, s.created_at, s.updated_at from services s join principals p on p.id = s.created_by
            where s.id = any(\(ids)::bigint[])
            """, logger: logger
        ).decode((Int64, String, Date, Date).self).collect()
        let metaByID = Dictionary(meta.map { ($0.0, ($0.1, $0.2, $0.3)) }, uniquingKeysWith: { a, _ in a })
        return rows.map { row in
            let list = (replicas[row.id] ?? []).filter { $0.index < row.replicas || !$0.state.isTerminal }
            let (by, created, updated) = metaByID[row.id] ?? ("?", Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 0))
            return ServiceView(
                id: row.id, name: row.name, project: row.project, partner: row.partner, replicas: row.replicas,
                healthy: list.filter { $0.healthy == true }.count, spec: row.spec, createdBy: by, createdAt: created, updatedAt: updated,
                replicaJobs: list)
        }
    }
}

extension Store {
    /// `SPREAD` per host where another replica of the job's service holds an attempt (none for other jobs).
    func spreadReasons(job id: Int64, on connection: PostgresConnection) async throws -> [Int64: Reason] {
        var reasons: [Int64: Reason] = [:]
        for try await (host, service, replica) in try await connection.query(
            """
            select a.host_id, s.name, o.replica from jobs j
            join services s on s.id = j.service_id
            join jobs o on o.service_id = j.service_id and o.id <> j.id
            join attempts a on a.job_id = o.id and a.state in ('assigned', 'running')
            where j.id = \(id)
            order by o.replica
            """, logger: logger
        ).decode((Int64, String, Int32).self) where reasons[host] == nil {
            reasons[host] = Reason(
                .spread, subject: service, category: .capacity,
                detail: "replica \(replica) of service \(service) runs here, and replicas of one service run on distinct hosts",
                brief: "replica \(replica) here")
        }
        return reasons
    }
}
