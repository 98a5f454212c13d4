import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

final class SharingCache: Sendable {
    let current = Mutex<SharingContext?>(nil)
}

/// What fair sharing reads, loaded once per change of `sharing_state.generation` (weights, grants, quotas, limits,
/// projects, and each accounting run).
package struct SharingContext: Sendable {
    struct PartnerSettings: Sendable {
        var name: String
        var borrowLimit: Double?
        var lendLimit: Double?
        var lendsNonReclaimable: Bool
        /// Decayed capacity offered (weighted-GPU, core and GiB seconds).
        var contributed: ShareVector
    }

    struct ProjectSettings: Sendable {
        var name: String
        var partnerID: Int64
        var shares: Int
        /// Decayed usage (weighted-GPU, core and GiB seconds).
        var used: ShareVector
    }

    var generation: Int64
    var accountedAt: Date
    var weights: GPUWeights
    var weightList: [GPUWeight]
    var grants: [Grant]
    var quotas: [Quota]
    var partners: [Int64: PartnerSettings]
    var projects: [Int64: ProjectSettings]
    /// Fractions of each pool, from decayed contribution and grants.
    var entitlements: [Int64: ShareVector]
    /// Decayed usage as fractions of all decayed usage.
    var partnerUsedShare: [Int64: ShareVector]
    var projectUsedShare: [Int64: ShareVector]
    /// Each project's fraction of the pools: its partner's entitlement split by the shares of its projects.
    var projectEntitlements: [Int64: ShareVector]

    /// Standings before a pass places anything, given what is held now.
    func standings(holding partners: [Int64: ShareVector], projects: [Int64: ShareVector]) -> (partners: [Int64: ShareStanding], projects: [Int64: ShareStanding]) {
        var partnerStandings: [Int64: ShareStanding] = [:]
        for id in Set(self.partners.keys).union(partners.keys) {
            partnerStandings[id] = ShareStanding(
                entitled: entitlements[id] ?? .zero, usedShare: partnerUsedShare[id] ?? .zero, allocated: partners[id] ?? .zero)
        }
        var projectStandings: [Int64: ShareStanding] = [:]
        for id in Set(self.projects.keys).union(projects.keys) {
            projectStandings[id] = ShareStanding(
                entitled: projectEntitlements[id] ?? .zero, usedShare: projectUsedShare[id] ?? .zero, allocated: projects[id] ?? .zero)
        }
        return (partnerStandings, projectStandings)
    }
}

/// Fair sharing: accounting, the sharing context, and the admin data (weights, grants, quotas, limits).
extension Store {
    static let accountingLockKey: Int64 = 0x636f_6d69_7479_04

    func sharingContext(on connection: PostgresConnection, knownGeneration: Int64? = nil) async throws -> SharingContext {
        var generation = knownGeneration ?? -1
        if knownGeneration == nil {
            generation = try await connection.query("select generation from sharing_state", logger: logger).decode(Int64.self).collect().first ?? 0
        }
        if let cached = sharingCache.current.withLock({ $0 }), cached.generation == generation { return cached }
        let context = try await loadSharingContext(generation: generation, on: connection)
        sharingCache.current.withLock { $0 = context }
        return context
    }

    func loadSharingContext(generation: Int64, on connection: PostgresConnection) async throws -> SharingContext {
        let accountedAt = try await connection.query("select accounted_at from sharing_state", logger: logger).decode(Date.self).collect().first ?? Date()
        let weightList = try await connection.query("select pattern, weight from gpu_weights order by pattern", logger: logger)
            .decode((String, Double).self).collect().map { GPUWeight(pattern: $0.0, weight: $0.1) }
        let grants = try await connection.query("select partner_id, kind, fraction from grants where revoked_at is null", logger: logger)
            .decode((Int64, String, Double).self).collect().compactMap { partner, kind, fraction in
                ResourceKind(rawValue: kind).map { Grant(partnerID: partner, kind: $0, fraction: fraction) }
            }
        var partners: [Int64: SharingContext.PartnerSettings] = [:]
        for try await (id, name, borrow, lend, nonReclaimable, gpu, cpu, memory) in try await connection.query(
            """
            select p.id, p.name, p.borrow_limit, p.lend_limit, p.lends_non_reclaimable, coalesce(c.gpu, 0), coalesce(c.cpu, 0), coalesce(c.memory, 0)
            from partners p left join partner_contribution c on c.partner_id = p.id
            """, logger: logger
        ).decode((Int64, String, Double?, Double?, Bool, Double, Double, Double).self) {
            partners[id] = .init(
                name: name, borrowLimit: borrow, lendLimit: lend, lendsNonReclaimable: nonReclaimable,
                contributed: ShareVector(gpu: gpu, cpu: cpu, memory: memory))
        }
        var projects: [Int64: SharingContext.ProjectSettings] = [:]
        for try await (id, name, partner, shares, gpu, cpu, memory) in try await connection.query(
            """
            select p.id, p.name, p.partner_id, p.shares, coalesce(u.gpu, 0), coalesce(u.cpu, 0), coalesce(u.memory, 0)
            from projects p left join project_usage u on u.project_id = p.id
            """, logger: logger
        ).decode((Int64, String, Int64, Int32, Double, Double, Double).self) {
            projects[id] = .init(name: name, partnerID: partner, shares: Int(shares), used: ShareVector(gpu: gpu, cpu: cpu, memory: memory))
        }
        var quotas: [Quota] = []
        for try await (scope, partner, project, region, gpus, cpu, memory) in try await connection.query(
            "select scope, partner_id, project_id, region, gpus, cpu_millis, memory_bytes from quotas", logger: logger
        ).decode((String, Int64?, Int64?, String?, Int32?, Int32?, Int64?).self) {
            guard let scope = Quota.Scope(rawValue: scope), let subjectID = scope == .partner ? partner : project else { continue }
            let name = scope == .partner ? partners[subjectID]?.name : projects[subjectID]?.name
            quotas.append(
                Quota(
                    scope: scope, subjectID: subjectID, subject: name ?? "#\(subjectID)", region: region, gpus: gpus.map(Int.init),
                    cpuMillis: cpu.map(Int.init), memoryBytes: memory))
        }
        let entitlements = Entitlements.compute(contributions: partners.mapValues(\.contributed), grants: grants)
        var partnerUsed: [Int64: ShareVector] = [:]
        var totalUsed = ShareVector.zero
        for project in projects.values {
            partnerUsed[project.partnerID, default: .zero] += project.used
            totalUsed += project.used
        }
        var shareTotals: [Int64: Int] = [:]
        for project in projects.values { shareTotals[project.partnerID, default: 0] += project.shares }
        var projectEntitlements: [Int64: ShareVector] = [:]
        for (id, project) in projects {
            let fraction = Double(project.shares) / Double(max(1, shareTotals[project.partnerID] ?? 1))
            projectEntitlements[id] = (entitlements[project.partnerID] ?? .zero) * fraction
        }
        return SharingContext(
            generation: generation, accountedAt: accountedAt,
            weights: GPUWeights(Dictionary(weightList.map { ($0.pattern, $0.weight) }, uniquingKeysWith: { a, _ in a })), weightList: weightList,
            grants: grants, quotas: quotas, partners: partners, projects: projects, entitlements: entitlements,
            partnerUsedShare: partnerUsed.mapValues { $0.fraction(of: totalUsed) },
            projectUsedShare: projects.mapValues { $0.used.fraction(of: totalUsed) }, projectEntitlements: projectEntitlements)
    }

    // MARK: Accounting

    /// Brings contribution and usage up to now: every active host with a fresh heartbeat whose partner lends to
    /// guests adds its capacity (× the partner's lending limit, if any) × the time since the last run (at most three intervals: a server that was away does not credit hosts for it);
    /// every attempt adds what it held × the time it held it since then; everything older decays by the half-life.
    /// One replica does it at a time (the others skip).
    ///
    /// - Returns: whether this replica accounted.
    @discardableResult
    package func accountSharing() async throws -> Bool {
        try await transaction { connection in
            let state = try await connection.query(
                "select extract(epoch from now() - accounted_at)::float8 from sharing_state for update skip locked", logger: logger
            ).decode(Double.self).collect()
            guard let elapsed = state.first, elapsed >= 1 else { return false }
            let context = try await sharingContext(on: connection)
            let rules = try await policyContext(on: connection).active()
            let credit = min(elapsed, Double(3 * configuration.accountingIntervalSeconds))
            // Offered to the commons: a partner whose donor policy permits no guests offers nothing; one with a
            // lending limit offers that fraction of its hosts.
            var offeredFraction: [Int64: Double] = [:]
            for (id, partner) in context.partners {
                guard case .donorPolicy(let policy)? = rules.donors[partner.name]?.document.body, !policy.permit.isEmpty else { continue }
                offeredFraction[id] = partner.lendLimit ?? 1
            }
            var hostGPUs: [Int64: [GPU]] = [:]
            var hostPartner: [Int64: Int64] = [:]
            var offered: [(host: Int64, capacity: ShareVector)] = []
            for try await (id, partner, cpu, memory, gpusText, fresh) in try await connection.query(
                """
                select id, partner_id, cpu_millis, memory_bytes, gpus::text,
                       state = 'active' and last_heartbeat > now() - make_interval(secs => \(Double(configuration.hostTimeoutSeconds)))
                from hosts
                """, logger: logger
            ).decode((Int64, Int64, Int32, Int64, String, Bool).self) {
                let gpus = try gpuCache.gpus(host: id, json: gpusText)
                hostGPUs[id] = gpus
                hostPartner[id] = partner
                if fresh, let fraction = offeredFraction[partner], fraction > 0 {
                    offered.append((id, ShareVector(cpuMillis: Int(cpu), memoryBytes: memory, weightedGPUs: context.weights.weighted(gpus)) * fraction))
                }
            }
            var contributed: [Int64: ShareVector] = [:]
            for (host, capacity) in offered { contributed[hostPartner[host]!, default: .zero] += capacity * credit }
            var used: [Int64: (partner: Int64, amount: ShareVector)] = [:]
            for try await (host, project, partner, cpu, memory, indices, seconds) in try await connection.query(
                """
                select a.host_id, a.project_id, a.partner_id, a.cpu_millis, a.memory_bytes, a.gpu_indices,
                       extract(epoch from least(coalesce(a.ended_at, now()), now()) - greatest(a.assigned_at, s.accounted_at))::float8
                from attempts a, sharing_state s
                where (a.state in ('assigned', 'running') or a.ended_at > s.accounted_at) and a.project_id is not null
                """, logger: logger
            ).decode((Int64, Int64, Int64, Int32, Int64, [Int32], Double).self) where seconds > 0 {
                let weighted = context.weights.weighted(indices: indices.map(Int.init), of: hostGPUs[host] ?? [])
                let amount = ShareVector(cpuMillis: Int(cpu), memoryBytes: memory, weightedGPUs: weighted) * seconds
                used[project] = (partner, (used[project]?.amount ?? .zero) + amount)
            }
            let decay = Decay.factor(elapsedSeconds: elapsed, halfLifeSeconds: configuration.shareHalfLifeSeconds)
            let partnerIDs = Array(contributed.keys)
            let projectIDs = Array(used.keys)
            try await connection.query(
                """
                with decayed as (
                    -- Rows the upsert below adds to are decayed there: a row changed by two parts of one statement
                    -- keeps only one of the changes.
                    update partner_contribution set gpu = gpu * \(decay), cpu = cpu * \(decay), memory = memory * \(decay)
                    where partner_id <> all(\(partnerIDs)::bigint[])
                ), added as (
                    insert into partner_contribution (partner_id, gpu, cpu, memory)
                    select * from unnest(\(partnerIDs)::bigint[], \(partnerIDs.map { contributed[$0]!.gpu })::float8[],
                                         \(partnerIDs.map { contributed[$0]!.cpu })::float8[], \(partnerIDs.map { contributed[$0]!.memory })::float8[])
                    on conflict (partner_id) do update set gpu = partner_contribution.gpu * \(decay) + excluded.gpu,
                        cpu = partner_contribution.cpu * \(decay) + excluded.cpu, memory = partner_contribution.memory * \(decay) + excluded.memory
                )
                select 1
                """, logger: logger)
            try await connection.query(
                """
                with decayed as (
                    update project_usage set gpu = gpu * \(decay), cpu = cpu * \(decay), memory = memory * \(decay)
                    where project_id <> all(\(projectIDs)::bigint[])
                ), added as (
                    insert into project_usage (project_id, partner_id, gpu, cpu, memory)
                    select * from unnest(\(projectIDs)::bigint[], \(projectIDs.map { used[$0]!.partner })::bigint[],
                                         \(projectIDs.map { used[$0]!.amount.gpu })::float8[], \(projectIDs.map { used[$0]!.amount.cpu })::float8[],
                                         \(projectIDs.map { used[$0]!.amount.memory })::float8[])
                    on conflict (project_id) do update set gpu = project_usage.gpu * \(decay) + excluded.gpu,
                        cpu = project_usage.cpu * \(decay) + excluded.cpu, memory = project_usage.memory * \(decay) + excluded.memory
                )
                select 1
                """, logger: logger)
            let hosts = offered.map(\.host)
            try await connection.query(
                """
                insert into host_hours (host_id, hour, up_seconds, gpu_seconds, cpu_seconds, memory_seconds)
                select h, date_trunc('hour', now()), \(credit), g, c, m
                from unnest(\(hosts)::bigint[], \(offered.map { $0.capacity.gpu * credit })::float8[],
                            \(offered.map { $0.capacity.cpu * credit })::float8[], \(offered.map { $0.capacity.memory * credit })::float8[]) as x(h, g, c, m)
                on conflict (host_id, hour) do update set up_seconds = host_hours.up_seconds + excluded.up_seconds,
                    gpu_seconds = host_hours.gpu_seconds + excluded.gpu_seconds, cpu_seconds = host_hours.cpu_seconds + excluded.cpu_seconds,
                    memory_seconds = host_hours.memory_seconds + excluded.memory_seconds
                """, logger: logger)
            try await connection.query("update sharing_state set accounted_at = now(), generation = generation + 1", logger: logger)
            return true
        }
    }
}
