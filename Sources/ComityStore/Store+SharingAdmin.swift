import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO

/// `comity shares`, `comity usage`, quotas, grants, lending limits and GPU weights.
extension Store {
    // MARK: Standings

    /// Every partner's standing now. Aggregates only: any role but an agent may read it.
    package func shares() async throws -> SharesReport {
        try await client.withConnection { connection in
            let context = try await policyContext(on: connection)
            let sharing = try await sharingContext(on: connection)
            let pool = try await availableHosts(context, sharing: sharing, on: connection)
            let round = SharingRound(sharing: sharing, pool: pool, preemptible: [:], reservedHosts: [])
            var granted: [Int64: ShareVector] = [:]
            for grant in sharing.grants { granted[grant.partnerID, default: .zero][grant.kind] += grant.fraction }
            var used: [Int64: ShareVector] = [:]
            for project in sharing.projects.values { used[project.partnerID, default: .zero] += project.used }
            let partners = sharing.partners.map { id, settings in
                let standing = round.partnerStandings[id] ?? ShareStanding(entitled: .zero)
                return PartnerShare(
                    partner: settings.name, contributed: settings.contributed * (1 / 3600), granted: granted[id] ?? .zero,
                    entitled: standing.entitled, used: (used[id] ?? .zero) * (1 / 3600), holding: standing.allocated,
                    ratio: standing.ratio(capacity: pool.capacity), factor: standing.factor(capacity: pool.capacity),
                    borrowing: standing.heldRatio(capacity: pool.capacity) > 1 + 1e-9, borrowLimit: settings.borrowLimit, lendLimit: settings.lendLimit,
                    lendsNonReclaimable: settings.lendsNonReclaimable)
            }.sorted { $0.partner < $1.partner }
            return SharesReport(
                capacity: pool.capacity, halfLifeSeconds: Int64(configuration.shareHalfLifeSeconds), accountedAt: sharing.accountedAt, partners: partners,
                gpuWeights: sharing.weightList)
        }
    }

    /// Resource-hours used by jobs and offered by hosts since `since`, grouped. Used hours are exact per attempt
    /// (a GPU weighs what its host's GPUs weigh on average); contributed hours come from the accounting runs.
    /// Partner admins see their partner's jobs and hosts; researchers their project's jobs.
    package func usage(by grouping: UsageReport.Grouping, partner: String?, since: Date, scope: JobScope) async throws -> UsageReport {
        try await client.withConnection { connection in
            var partnerID: Int64?
            if let partner { partnerID = try await self.partnerID(partner, field: "partner", on: connection) }
            let (scopePartner, scopeProject) = scope.filters
            let sharing = try await sharingContext(on: connection)
            let key: String =
                switch grouping {
                case .partner: "pa.name"
                case .project: "pr.name"
                case .host: "h.name || '@' || hp.name"
                case .region: "h.region"
                }
            var rows: [String: (used: ShareVector, contributed: ShareVector)] = [:]
            let hostWeights = try await averageGPUWeights(sharing.weights, on: connection)
            for try await (name, host, gpuSeconds, cpuSeconds, memorySeconds) in try await connection.query(
                """
                select \(unescaped: key), a.host_id, sum(cardinality(a.gpu_indices) * s.seconds)::float8, sum(a.cpu_millis / 1000.0 * s.seconds)::float8,
                       sum(a.memory_bytes / 1073741824.0 * s.seconds)::float8
                from attempts a
                join jobs j on j.id = a.job_id join partners pa on pa.id = j.partner_id join projects pr on pr.id = j.project_id
                join hosts h on h.id = a.host_id join partners hp on hp.id = h.partner_id
                cross join lateral (
                    select extract(epoch from least(coalesce(a.ended_at, now()), now()) - greatest(a.assigned_at, \(since)))::float8 as seconds
                ) s
                where (a.ended_at is null or a.ended_at > \(since)) and s.seconds > 0
                  and (\(partnerID)::bigint is null or j.partner_id = \(partnerID))
                  and (\(scopePartner)::bigint is null or j.partner_id = \(scopePartner))
                  and (\(scopeProject)::bigint is null or j.project_id = \(scopeProject))
                group by 1, 2
                """, logger: logger
            ).decode((String, Int64, Double, Double, Double).self) {
                let used = ShareVector(gpu: gpuSeconds * (hostWeights[host] ?? 1), cpu: cpuSeconds, memory: memorySeconds) * (1 / 3600)
                rows[name, default: (.zero, .zero)].used += used
            }
            if grouping != .project, scope.filters.1 == nil {
                let hostKey = key.replacingOccurrences(of: "pa.name", with: "hp.name")
                for try await (name, gpu, cpu, memory) in try await connection.query(
                    """
                    select \(unescaped: hostKey), sum(hh.gpu_seconds)::float8, sum(hh.cpu_seconds)::float8, sum(hh.memory_seconds)::float8
                    from host_hours hh join hosts h on h.id = hh.host_id join partners hp on hp.id = h.partner_id
                    where hh.hour >= date_trunc('hour', \(since)::timestamptz)
                      and (\(partnerID)::bigint is null or h.partner_id = \(partnerID))
                      and (\(scopePartner)::bigint is null or h.partner_id = \(scopePartner))
                    group by 1
                    """, logger: logger
                ).decode((String, Double, Double, Double).self) {
                    rows[name, default: (.zero, .zero)].contributed += ShareVector(gpu: gpu, cpu: cpu, memory: memory) * (1 / 3600)
                }
            }
            let now = Date()
            return UsageReport(
                by: grouping, partner: partner, since: since, until: now,
                rows: rows.map { UsageReport.Row(key: $0.key, used: $0.value.used, contributed: $0.value.contributed) }.sorted { $0.key < $1.key })
        }
    }

    /// Per host, the mean weight of its GPUs.
    func averageGPUWeights(_ weights: GPUWeights, on connection: PostgresConnection) async throws -> [Int64: Double] {
        var result: [Int64: Double] = [:]
        for try await (id, text) in try await connection.query("select id, gpus::text from hosts where gpus <> '[]'", logger: logger)
            .decode((Int64, String).self)
        {
            let gpus = try gpuCache.gpus(host: id, json: text)
            if !gpus.isEmpty { result[id] = weights.weighted(gpus) / Double(gpus.count) }
        }
        return result
    }

    // MARK: Grants

    /// Grants visible in `scope`: all, or those of the principal's partner (a researcher's: its project's partner).
    package func grants(scope: JobScope, includeRevoked: Bool) async throws -> [GrantView] {
        let (scopePartner, project) = scope.filters
        var partner = scopePartner
        if let project {
            partner = try await client.query("select partner_id from projects where id = \(project)", logger: logger).decode(Int64.self).collect().first ?? -1
        }
        return try await client.query(
            """
            select g.id, pa.name, g.kind, g.fraction, g.reason, coalesce(pr.name, 'system'), g.created_at, g.revoked_at
            from grants g join partners pa on pa.id = g.partner_id left join principals pr on pr.id = g.created_by
            where (\(includeRevoked) or g.revoked_at is null) and (\(partner)::bigint is null or g.partner_id = \(partner))
            order by g.id
            """, logger: logger
        ).decode((Int64, String, String, Double, String, String, Date, Date?).self).collect().map { id, partner, kind, fraction, reason, by, at, revoked in
            GrantView(
                id: id, partner: partner, kind: ResourceKind(rawValue: kind) ?? .gpu, fraction: fraction, reason: reason, createdBy: by, createdAt: at,
                revokedAt: revoked)
        }
    }

    /// Gives a partner a share of a pool (admins only); replaces its active grant of the same kind.
    package func addGrant(_ request: GrantRequest, by principal: Principal) async throws -> GrantView {
        guard principal.role == .admin else { throw StoreError(.forbidden, "only admins give grants") }
        guard request.fraction > 0, request.fraction <= 1, request.fraction.isFinite else {
            throw StoreError(.invalid, "expected a fraction of the pool in (0, 1] such as 0.02 (2%), got \(request.fraction)", field: "fraction")
        }
        let reason = request.reason ?? ""
        guard reason.count <= 500 else { throw StoreError(.invalid, "expected at most 500 characters", field: "reason") }
        let id = try await transaction { connection in
            let partnerID = try await partnerID(request.partner, field: "partner", on: connection)
            // Concurrent grants to one partner wait for each other (else the second would break grants_active).
            try await connection.query("select 1 from partners where id = \(partnerID) for no key update", logger: logger)
            // Two statements: a data-modifying CTE's update is not seen by the same statement's unique check.
            try await connection.query(
                """
                update grants set revoked_at = now(), revoked_by = \(principal.id)
                where partner_id = \(partnerID) and kind = \(request.kind.rawValue) and revoked_at is null
                """, logger: logger)
            let id = try await connection.query(
                """
                insert into grants (partner_id, kind, fraction, reason, created_by)
                values (\(partnerID), \(request.kind.rawValue), \(request.fraction), \(reason), \(principal.id)) returning id
                """, logger: logger
            ).decode(Int64.self).collect().first!
            try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger)
            try await audit(
                "grant-added", actor: principal.name, partners: [request.partner],
                body: .object([
                    "grant": .number(Double(id)), "kind": .string(request.kind.rawValue), "fraction": .number(request.fraction), "reason": .string(reason),
                ]), on: connection)
            return id
        }
        return try await grants(scope: .all, includeRevoked: false).first { $0.id == id }!
    }

    /// Revokes a grant (admins only). Returns `false` when there is no such active grant.
    package func revokeGrant(_ id: Int64, by principal: Principal) async throws -> Bool {
        guard principal.role == .admin else { throw StoreError(.forbidden, "only admins revoke grants") }
        return try await transaction { connection in
            let rows = try await connection.query(
                """
                update grants g set revoked_at = now(), revoked_by = \(principal.id) from partners p
                where g.id = \(id) and g.revoked_at is null and p.id = g.partner_id returning p.name, g.kind, g.fraction
                """, logger: logger
            ).decode((String, String, Double).self).collect()
            guard let (partner, kind, fraction) = rows.first else { return false }
            try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger)
            try await audit(
                "grant-revoked", actor: principal.name, partners: [partner],
                body: .object(["grant": .number(Double(id)), "kind": .string(kind), "fraction": .number(fraction)]), on: connection)
            return true
        }
    }

    // MARK: Quotas

    /// Quotas visible in `scope`, with what counts against each now.
    package func quotas(scope: JobScope) async throws -> [QuotaView] {
        let (partner, project) = scope.filters
        let rows = try await client.query(
            """
            select q.id, q.scope, coalesce(pa.name, pr.name), coalesce(pa.name, prp.name), q.region, q.gpus, q.cpu_millis, q.memory_bytes,
                   coalesce(u.name, 'system'), q.set_at,
                   coalesce(h.gpus, 0)::bigint, coalesce(h.cpu, 0)::bigint, coalesce(h.memory, 0)::bigint
            from quotas q
            left join partners pa on pa.id = q.partner_id
            left join projects pr on pr.id = q.project_id left join partners prp on prp.id = pr.partner_id
            left join principals u on u.id = q.set_by
            left join lateral (
                select sum(cardinality(a.gpu_indices)) as gpus, sum(a.cpu_millis) as cpu, sum(a.memory_bytes) as memory
                from attempts a join hosts ah on ah.id = a.host_id
                where a.state in ('assigned', 'running')
                  and (q.partner_id is null or a.partner_id = q.partner_id) and (q.project_id is null or a.project_id = q.project_id)
                  and (q.region is null or ah.region = q.region)
            ) h on true
            where (\(partner)::bigint is null or coalesce(q.partner_id, pr.partner_id) = \(partner))
              and (\(project)::bigint is null or q.project_id = \(project))
            order by q.scope, 3, q.region nulls first
            """, logger: logger
        ).decode((Int64, String, String, String, String?, Int32?, Int32?, Int64?, String, Date, Int64, Int64, Int64).self).collect()
        return rows.map { id, scope, subject, partner, region, gpus, cpu, memory, by, at, heldGPUs, heldCPU, heldMemory in
            QuotaView(
                id: id, scope: Quota.Scope(rawValue: scope) ?? .partner, subject: subject, partner: partner, region: region, gpus: gpus.map(Int.init),
                cpuMillis: cpu.map(Int.init), memoryBytes: memory, holding: QuotaUsage(gpus: Int(heldGPUs), cpuMillis: Int(heldCPU), memoryBytes: heldMemory),
                setBy: by, setAt: at)
        }
    }

    /// Sets a quota, replacing the one with the same scope, subject and region. Admins set any; a partner's admin
    /// sets its own projects'.
    package func setQuota(_ request: QuotaRequest, by principal: Principal) async throws -> QuotaView {
        var cpuMillis: Int?
        var memory: Int64?
        var errors: [FieldError] = []
        if let gpus = request.gpus, gpus < 0 || gpus > 100_000 { errors.append(FieldError(field: "gpus", message: "expected a count from 0 to 100000, got \(gpus)")) }
        if let text = request.cpus {
            if let cpus = Double(text.trimmingCharacters(in: .whitespaces)), cpus >= 0, cpus <= 2_000_000 { cpuMillis = Int((cpus * 1000).rounded()) } else {
                errors.append(FieldError(field: "cpus", message: "expected a CPU count from 0 to 2000000 such as 8 or 0.5, got \"\(text)\""))
            }
        }
        if let text = request.memory {
            if let bytes = Quantity.bytes(text), bytes <= 1 << 60 { memory = bytes } else {
                errors.append(FieldError(field: "memory", message: "expected a size such as 64Gi or 512Mi, got \"\(text)\""))
            }
        }
        if request.gpus == nil, request.cpus == nil, request.memory == nil {
            errors.append(FieldError(field: "gpus", message: "expected at least one of gpus, cpus, memory"))
        }
        guard errors.isEmpty else { throw StoreError(.invalid, "invalid quota", fields: errors) }
        let id = try await transaction { connection in
            var partnerID: Int64?
            var projectID: Int64?
            var owner: Int64
            switch request.scope {
            case .partner:
                partnerID = try await self.partnerID(request.subject, field: "subject", on: connection)
                owner = partnerID!
                guard principal.role == .admin else { throw StoreError(.forbidden, "only admins set a partner's quota", field: "subject") }
            case .project:
                let ids = try await projectIDs(request.subject, field: "subject")
                projectID = ids.project
                owner = ids.partner
                guard principal.role == .admin || (principal.role == .partnerAdmin && principal.partnerID == owner) else {
                    throw StoreError(.forbidden, "\(principal.role.rawValue) \(principal.name) may not set quotas of project \(request.subject)", field: "subject")
                }
            }
            if let region = request.region {
                let known = try await connection.query("select 1 from regions where name = \(region)", logger: logger).decode(Int.self).collect()
                guard !known.isEmpty else { throw StoreError(.invalid, "unknown region \"\(region)\"", field: "region") }
            }
            // A quota an admin set is the admins' to change.
            if principal.role != .admin {
                let setByAdmin = try await connection.query(
                    """
                    select coalesce(p.role = 'admin', false) from quotas q left join principals p on p.id = q.set_by
                    where q.scope = \(request.scope.rawValue) and q.partner_id is not distinct from \(partnerID)
                      and q.project_id is not distinct from \(projectID) and q.region is not distinct from \(request.region)
                    for update of q
                    """, logger: logger
                ).decode(Bool.self).collect()
                if setByAdmin.first == true {
                    throw StoreError(.forbidden, "an admin set this quota; only admins change it", field: "subject")
                }
            }
            let id = try await connection.query(
                """
                insert into quotas (scope, partner_id, project_id, region, gpus, cpu_millis, memory_bytes, set_by)
                values (\(request.scope.rawValue), \(partnerID), \(projectID), \(request.region), \(request.gpus.map(Int32.init)),
                        \(cpuMillis.map(Int32.init)), \(memory), \(principal.id))
                on conflict (scope, partner_id, project_id, region) do update set gpus = excluded.gpus, cpu_millis = excluded.cpu_millis,
                    memory_bytes = excluded.memory_bytes, set_by = excluded.set_by, set_at = now()
                returning id
                """, logger: logger
            ).decode(Int64.self).collect().first!
            let partnerName = try await connection.query("select name from partners where id = \(owner)", logger: logger).decode(String.self).collect().first ?? ""
            try await audit(
                "quota-set", actor: principal.name, partners: [partnerName], region: request.region ?? "",
                body: .object([
                    "quota": .number(Double(id)), "scope": .string(request.scope.rawValue), "subject": .string(request.subject),
                    "gpus": request.gpus.map { .number(Double($0)) } ?? .null, "cpu_millis": cpuMillis.map { .number(Double($0)) } ?? .null,
                    "memory_bytes": memory.map { .number(Double($0)) } ?? .null,
                ]), on: connection)
            try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger)
            return id
        }
        return try await quotas(scope: .all).first { $0.id == id }!
    }

    /// Removes a quota. Returns `false` when there is none the principal may see.
    package func deleteQuota(_ id: Int64, by principal: Principal) async throws -> Bool {
        try await transaction { connection in
            let rows = try await connection.query(
                """
                select q.scope, coalesce(q.partner_id, pr.partner_id), p.name, coalesce(u.role = 'admin', false)
                from quotas q left join projects pr on pr.id = q.project_id
                join partners p on p.id = coalesce(q.partner_id, pr.partner_id) left join principals u on u.id = q.set_by
                where q.id = \(id) for update of q
                """, logger: logger
            ).decode((String, Int64, String, Bool).self).collect()
            guard let (scope, owner, partner, setByAdmin) = rows.first else { return false }
            switch principal.role {
            case .admin: break
            case .partnerAdmin where principal.partnerID == owner && scope == "project" && setByAdmin:
                throw StoreError(.forbidden, "an admin set this quota; only admins remove it")
            case .partnerAdmin where principal.partnerID == owner && scope == "project": break
            case .partnerAdmin where principal.partnerID == owner: throw StoreError(.forbidden, "only admins remove a partner's quota")
            default: return false
            }
            try await connection.query("delete from quotas where id = \(id)", logger: logger)
            try await audit("quota-removed", actor: principal.name, partners: [partner], body: .object(["quota": .number(Double(id))]), on: connection)
            try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger)
            return true
        }
    }

    // MARK: Limits and weights

    /// Sets a partner's borrowing and lending limits: admins for any partner; a partner's admin only its lending
    /// (its own hardware), not its borrowing limit.
    package func setLending(partner: String, _ request: LendingRequest, by principal: Principal) async throws -> LendingRequest {
        var errors: [FieldError] = []
        if let limit = request.borrowLimit, !(limit >= 0 && limit <= 1) {
            errors.append(FieldError(field: "borrow_limit", message: "expected a fraction of each pool from 0 to 1 (0.2 is 20%), got \(limit)"))
        }
        if let limit = request.lendLimit, !(limit >= 0 && limit <= 1) {
            errors.append(FieldError(field: "lend_limit", message: "expected a fraction of the partner's capacity from 0 to 1, got \(limit)"))
        }
        guard errors.isEmpty else { throw StoreError(.invalid, "invalid limits", fields: errors) }
        return try await transaction { connection in
            let id = try await partnerID(partner, field: "partner", on: connection)
            let current = try await connection.query("select borrow_limit from partners where id = \(id) for no key update", logger: logger)
                .decode(Double?.self).collect().first ?? nil
            switch principal.role {
            case .admin: break
            case .partnerAdmin where principal.partnerID == id:
                guard request.borrowLimit == current else {
                    throw StoreError(.forbidden, "only admins set a partner's borrowing limit", field: "borrow_limit")
                }
            default: throw StoreError(.forbidden, "\(principal.role.rawValue) \(principal.name) may not set the limits of partner \(partner)", field: "partner")
            }
            try await connection.query(
                """
                update partners set borrow_limit = \(request.borrowLimit), lend_limit = \(request.lendLimit),
                    lends_non_reclaimable = \(request.lendsNonReclaimable) where id = \(id)
                """, logger: logger)
            try await audit(
                "lending-set", actor: principal.name, partners: [partner],
                body: .object([
                    "borrow_limit": request.borrowLimit.map(JSONValue.number) ?? .null, "lend_limit": request.lendLimit.map(JSONValue.number) ?? .null,
                    "lends_non_reclaimable": .bool(request.lendsNonReclaimable),
                ]), on: connection)
            try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger)
            return request
        }
    }

    package func gpuWeights() async throws -> [GPUWeight] {
        try await client.query("select pattern, weight from gpu_weights order by pattern", logger: logger).decode((String, Double).self).collect()
            .map { GPUWeight(pattern: $0.0, weight: $0.1) }
    }

    /// Sets (or, with `nil`, removes) the weight of GPUs whose model contains `pattern`, case-insensitively (admins
    /// only; patterns are kept lower-cased).
    package func setGPUWeight(_ pattern: String, weight: Double?, by principal: Principal) async throws {
        guard principal.role == .admin else { throw StoreError(.forbidden, "only admins set GPU weights") }
        let pattern = pattern.lowercased()
        guard !pattern.isEmpty, pattern.count <= 100 else { throw StoreError(.invalid, "expected 1 to 100 characters of a GPU model", field: "pattern") }
        if let weight, !(weight > 0 && weight <= 1000) {
            throw StoreError(.invalid, "expected a weight above 0 and at most 1000 (a plain GPU weighs 1), got \(weight)", field: "weight")
        }
        try await transaction { connection in
            if let weight {
                try await connection.query(
                    """
                    insert into gpu_weights (pattern, weight) values (\(pattern), \(weight))
                    on conflict (pattern) do update set weight = excluded.weight, updated_at = now()
                    """, logger: logger)
            } else {
                try await connection.query("delete from gpu_weights where pattern = \(pattern)", logger: logger)
            }
            try await connection.query("select pg_notify(\(Channel.scheduler), '')", logger: logger)
            try await audit(
                "gpu-weight-set", actor: principal.name, body: .object(["pattern": .string(pattern), "weight": weight.map(JSONValue.number) ?? .null]),
                on: connection)
        }
    }
}
