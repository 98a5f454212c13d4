import Foundation
import ComityCore

/// One pass's fair-sharing state: what each partner, project and donor holds as the pass places jobs, and which
/// hosts admit a job under quotas, borrowing and lending limits, and the rules.
struct SharingRound {
    /// A placement and what it means for sharing.
    struct Placed: Sendable {
        var placement: Placement
        var partnerID: Int64
        var projectID: Int64
        var holding: ShareVector
        /// On another partner's host.
        var guest: Bool
        /// Beyond its partner's entitlement when placed.
        var borrowed: Bool
    }

    /// Everything that decides admission (kept apart from the placer's sessions, so a closure can read it while a
    /// session changes).
    struct Admission {
        let sharing: SharingContext
        let pool: Store.Pool
        let preemptible: [Int64: Bool]
        var partnerStandings: [Int64: ShareStanding]
        var projectStandings: [Int64: ShareStanding]
        var quotas: QuotaBook
        /// Per donor partner: what guests hold on its hosts.
        var lent: [Int64: ShareVector]
        /// Whether any partner has a lending or borrowing limit (without, a guest needs no arithmetic).
        let hasLimits: Bool
    }

    private(set) var admission: Admission
    let reservedHosts: Set<Int64>
    /// Replicas of one service go to distinct hosts (see ``Spread``).
    private(set) var spread: Spread
    private var session: Placer.Session
    private var reservedSession: Placer.Session

    var sharing: SharingContext { admission.sharing }
    var pool: Store.Pool { admission.pool }
    var partnerStandings: [Int64: ShareStanding] { admission.partnerStandings }
    var projectStandings: [Int64: ShareStanding] { admission.projectStandings }
    /// The hosts with what is still free on them after this pass's placements (reserved hosts excluded).
    var hosts: [HostAvailability] { session.hosts }

    init(sharing: SharingContext, pool: Store.Pool, preemptible: [Int64: Bool], reservedHosts: Set<Int64>, spread: Spread = Spread()) {
        self.reservedHosts = reservedHosts
        self.spread = spread
        var quotas = QuotaBook(sharing.quotas)
        var partners: [Int64: ShareVector] = [:]
        var projects: [Int64: ShareVector] = [:]
        var lent: [Int64: ShareVector] = [:]
        for holding in pool.holdings {
            guard let partner = holding.partnerID, let project = holding.projectID else { continue }
            let vector = pool.weighted(
                ResourceRequest(cpuMillis: holding.cpuMillis, memoryBytes: holding.memoryBytes), gpuIndices: holding.gpuIndices, on: holding.hostID,
                weights: sharing.weights)
            partners[partner, default: .zero] += vector
            projects[project, default: .zero] += vector
            if holding.guest, let donor = pool.hostPartner[holding.hostID] { lent[donor, default: .zero] += vector }
            quotas.count(
                partnerID: partner, projectID: project, region: pool.hostRegion[holding.hostID] ?? "",
                QuotaUsage(gpus: holding.gpuIndices.count, cpuMillis: holding.cpuMillis, memoryBytes: holding.memoryBytes))
        }
        let (partnerStandings, projectStandings) = sharing.standings(holding: partners, projects: projects)
        admission = Admission(
            sharing: sharing, pool: pool, preemptible: preemptible, partnerStandings: partnerStandings, projectStandings: projectStandings,
            quotas: quotas, lent: lent, hasLimits: sharing.partners.values.contains { $0.lendLimit != nil || $0.borrowLimit != nil })
        if reservedHosts.isEmpty, let groups = pool.groups {
            session = Placer.Session(pool.hosts, groups: groups)
            reservedSession = Placer.Session([])
        } else {
            session = Placer.Session(pool.hosts.filter { !reservedHosts.contains($0.id) })
            reservedSession = Placer.Session(pool.hosts.filter { reservedHosts.contains($0.id) })
        }
    }

    static func usage(_ request: ResourceRequest) -> QuotaUsage {
        QuotaUsage(gpus: request.gpus, cpuMillis: request.cpuMillis, memoryBytes: request.memoryBytes)
    }

    func quotaBlocked(_ job: PendingJob) -> Bool { admission.quotaBlocked(job) }

    /// A job that does not allow preemption (a service unless it opted in, a batch job with `preemptible: false`).
    func isService(_ job: PendingJob) -> Bool { admission.preemptible[job.id] == false }

    /// Places `job` where sharing and the rules admit it, best fit first; updates what everyone holds.
    mutating func place(_ job: PendingJob, eligible: (Int, Int) -> Bool) -> Placed? {
        if admission.quotaBlocked(job) { return nil }
        // Jobs of one partner and class are admitted alike, except for regional quotas (per project) and services.
        let regional = admission.quotas.hasRegionalQuota(partnerID: job.partnerID, projectID: job.projectID)
        let service = isService(job)
        // A replica is also kept off its service's hosts: replicas of one service share a key of their own (their
        // excluded hosts only grow during the pass).
        let replicaOf = spread.serviceOf[job.id]
        let cacheKey = replicaOf.map { -$0 } ?? ((regional ? job.projectID << 1 : 0) | (service ? 1 : 0))
        let excluded = replicaOf.flatMap { spread.hosts[$0] } ?? []
        let placement: Placement?
        do {
            let admission = self.admission
            placement = session.place(job, cacheKey: cacheKey, excluding: excluded) { host in
                eligible(job.policyClass, host.policyKey) && admission.admits(job, service: service, on: host)
            }
        }
        return placement.map { record(job, $0) }
    }

    /// Places a job on the host reserved for it, if it fits there now.
    mutating func place(_ job: PendingJob, onlyOn hostID: Int64, eligible: (Int, Int) -> Bool) -> Placed? {
        // Quotas may have filled, or been lowered, while the host was being freed.
        if admission.quotaBlocked(job) { return nil }
        if spread.excludes(job.id, host: hostID) { return nil }
        let service = isService(job)
        let placement: Placement?
        do {
            let admission = self.admission
            placement = reservedSession.place(job, cacheKey: hostID) { host in
                host.id == hostID && eligible(job.policyClass, host.policyKey) && admission.admits(job, service: service, on: host)
            }
        }
        return placement.map { record(job, $0) }
    }

    private mutating func record(_ job: PendingJob, _ placement: Placement) -> Placed {
        let holding = pool.weighted(job.resources, gpuIndices: placement.gpuIndices, on: placement.hostID, weights: sharing.weights)
        let donor = pool.hostPartner[placement.hostID] ?? job.partnerID
        let guest = donor != job.partnerID
        if let service = spread.serviceOf[job.id] { spread.hosts[service, default: []].insert(placement.hostID) }
        admission.partnerStandings[job.partnerID, default: ShareStanding(entitled: .zero)].allocated += holding
        admission.projectStandings[job.projectID, default: ShareStanding(entitled: .zero)].allocated += holding
        if guest { admission.lent[donor, default: .zero] += holding }
        admission.quotas.count(
            partnerID: job.partnerID, projectID: job.projectID, region: pool.hostRegion[placement.hostID] ?? "", Self.usage(job.resources))
        let borrowed = guest && (partnerStandings[job.partnerID]?.heldRatio(capacity: pool.capacity) ?? 0) > 1 + 1e-9
        return Placed(placement: placement, partnerID: job.partnerID, projectID: job.projectID, holding: holding, guest: guest, borrowed: borrowed)
    }
}

extension SharingRound {
    /// Hard anti-affinity of service replicas: a replica never goes to a host where another replica of its service
    /// holds an attempt or was placed earlier in the pass. Only replica jobs pay for it (one lookup per job).
    struct Spread: Sendable {
        /// Replica job → its service.
        var serviceOf: [Int64: Int64] = [:]
        /// Service → hosts with an active attempt of one of its replicas (or placed in this pass).
        var hosts: [Int64: Set<Int64>] = [:]

        init(serviceOf: [Int64: Int64] = [:], hosts: [Int64: Set<Int64>] = [:]) {
            self.serviceOf = serviceOf
            self.hosts = hosts
        }

        /// Whether `job` may not go to `host` because another replica of its service is there.
        func excludes(_ job: Int64, host: Int64) -> Bool {
            guard let service = serviceOf[job] else { return false }
            return hosts[service]?.contains(host) ?? false
        }
    }
}

extension SharingRound.Admission {
    /// Whether a quota that applies everywhere holds the job back (it then waits without reclaiming anything).
    func quotaBlocked(_ job: PendingJob) -> Bool {
        quotas.exceeded(partnerID: job.partnerID, projectID: job.projectID, region: nil, SharingRound.usage(job.resources)) != nil
    }

    /// Whether `host` admits `job` as far as sharing goes (the caller checks the rules).
    func admits(_ job: PendingJob, service: Bool, on host: HostAvailability) -> Bool {
        // The common cases, without arithmetic: an own host, or no limits at all.
        if !quotas.hasRegional, host.partnerID == job.partnerID || (!hasLimits && !service) { return true }
        return failures(job, service: service, on: host, collecting: false).isEmpty
    }

    /// Why `host` does not admit `job` as far as sharing goes: every reason when `collecting`, else the first.
    ///
    /// Own hosts always admit (regional quotas aside). On another partner's host the job is a guest: the donor's
    /// lending limit must leave room, the job's partner may not pass its entitlement plus its borrowing limit, and a
    /// service that did not opt in to preemption goes only where the donor lends non-reclaimable capacity, and only
    /// within its partner's entitlement.
    func failures(_ job: PendingJob, service: Bool, on host: HostAvailability, collecting: Bool) -> [Reason] {
        var reasons: [Reason] = []
        if quotas.hasRegional,
            let (quota, held, resource) = quotas.exceeded(
                partnerID: job.partnerID, projectID: job.projectID, region: host.region, SharingRound.usage(job.resources))
        {
            guard collecting else { return [Self.stop] }
            reasons.append(Self.quotaReason(quota, held, resource))
        }
        if host.partnerID == job.partnerID { return reasons }
        let holding = pool.estimate(job.resources, onHost: host.id)
        let donor = sharing.partners[host.partnerID]
        if let limit = donor?.lendLimit {
            let capacity = pool.partnerCapacity[host.partnerID] ?? .zero
            let after = (lent[host.partnerID] ?? .zero) + holding
            if let kind = ResourceKind.allCases.first(where: { holding[$0] > 0 && after[$0] > limit * capacity[$0] + 1e-9 }) {
                guard collecting else { return [Self.stop] }
                let name = donor?.name ?? "#\(host.partnerID)"
                reasons.append(
                    Reason(
                        .lendLimit, subject: name, category: .sharing,
                        detail: "\(name) lends at most \(Self.percent(limit)) of its \(kind.rawValue) capacity to guests, and guests would hold \(Self.percent(after[kind] / max(capacity[kind], 1e-9)))",
                        brief: "\(Self.percent(limit)) lent"))
            }
        }
        var standing = partnerStandings[job.partnerID] ?? ShareStanding(entitled: .zero)
        standing.allocated += holding
        let held = standing.allocated.fraction(of: pool.capacity)
        let partnerName = sharing.partners[job.partnerID]?.name ?? "#\(job.partnerID)"
        if let limit = sharing.partners[job.partnerID]?.borrowLimit,
            let kind = ResourceKind.allCases.first(where: { holding[$0] > 0 && held[$0] > standing.entitled[$0] + limit + 1e-9 })
        {
            guard collecting else { return [Self.stop] }
            reasons.append(
                Reason(
                    .borrowLimit, subject: partnerName, category: .sharing,
                    detail: "\(partnerName) may hold \(Self.percent(limit)) of the \(kind.rawValue) pool beyond its entitlement of \(Self.percent(standing.entitled[kind])); it would hold \(Self.percent(held[kind]))",
                    brief: "\(Self.percent(limit)) beyond share"))
        }
        if service, donor?.lendsNonReclaimable != true || standing.heldRatio(capacity: pool.capacity) > 1 + 1e-9 {
            guard collecting else { return [Self.stop] }
            let name = donor?.name ?? "#\(host.partnerID)"
            reasons.append(
                Reason(
                    .serviceGuest, subject: name, category: .sharing,
                    detail: donor?.lendsNonReclaimable == true
                        ? "a job that does not allow preemption (a service unless it opts in) runs as a guest only within its partner's entitlement, and \(partnerName) would pass it"
                        : "a job that does not allow preemption (a service unless it opts in) runs as a guest only on capacity lent as non-reclaimable, and \(name) does not lend it",
                    brief: "not preemptible"))
        }
        return reasons
    }

    /// Returned when only the decision is wanted.
    static let stop = Reason(.quota, category: .sharing, detail: "")

    static func percent(_ fraction: Double) -> String {
        let value = fraction * 100
        return value >= 10 || value == 0 ? "\(Int(value.rounded()))%" : String(format: "%.1f%%", value)
    }

    static func quotaReason(_ quota: Quota, _ held: QuotaUsage, _ resource: String) -> Reason {
        Reason(
            .quota, subject: quota.label, category: .sharing, detail: "quota " + QuotaBook.describe(quota, holding: held, resource: resource),
            brief: "\(resource) at limit")
    }

}

extension Store.Pool {
    /// What a request would hold on a host (its GPUs weighed at the host's mean GPU weight).
    func estimate(_ request: ResourceRequest, onHost host: Int64) -> ShareVector {
        let weight = request.gpus == 0 ? 0 : hostGPUWeight[host] ?? 1
        return ShareVector(cpuMillis: request.cpuMillis, memoryBytes: request.memoryBytes, weightedGPUs: weight * Double(request.gpus))
    }
}
