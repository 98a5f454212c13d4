/// A hard limit on what a partner or project may hold at once, everywhere or in one region (`nil` limits are
/// unlimited). Admins set any; a partner's admin sets its projects'.
public struct Quota: Sendable, Hashable, Codable {
    public enum Scope: String, Sendable, Hashable, Codable, CaseIterable {
        case partner
        case project
    }

    public var scope: Scope
    public var subjectID: Int64
    /// The partner's or project's name, for reasons.
    public var subject: String
    /// Only attempts on hosts of this region count, and only placements there are limited.
    public var region: String?
    public var gpus: Int?
    public var cpuMillis: Int?
    public var memoryBytes: Int64?

    public init(scope: Scope, subjectID: Int64, subject: String, region: String? = nil, gpus: Int? = nil, cpuMillis: Int? = nil, memoryBytes: Int64? = nil) {
        self.scope = scope
        self.subjectID = subjectID
        self.subject = subject
        self.region = region
        self.gpus = gpus
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
    }

    /// `partner uni-a`, `project ml-lab in eu-west`.
    public var label: String { "\(scope.rawValue) \(subject)" + (region.map { " in \($0)" } ?? "") }
}

/// What a partner or project holds, in a quota's units.
public struct QuotaUsage: Sendable, Hashable, Codable {
    public var gpus: Int
    public var cpuMillis: Int
    public var memoryBytes: Int64

    public static let zero = QuotaUsage(gpus: 0, cpuMillis: 0, memoryBytes: 0)

    public init(gpus: Int, cpuMillis: Int, memoryBytes: Int64) {
        self.gpus = gpus
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
    }

    public static func + (a: QuotaUsage, b: QuotaUsage) -> QuotaUsage {
        QuotaUsage(gpus: a.gpus + b.gpus, cpuMillis: a.cpuMillis + b.cpuMillis, memoryBytes: a.memoryBytes + b.memoryBytes)
    }
}

/// The quotas and what counts against them during a pass: answers whether one more job fits under every quota
/// that applies to it, and why not.
public struct QuotaBook: Sendable {
    struct Subject: Hashable {
        var scope: Quota.Scope
        var id: Int64
        var region: String?
    }

    private var quotas: [Subject: Quota] = [:]
    private var usage: [Subject: QuotaUsage] = [:]
    /// Whether any quota is limited to a region (otherwise hosts need no per-region check).
    public private(set) var hasRegional = false
    public var isEmpty: Bool { quotas.isEmpty }

    public init(_ quotas: [Quota]) {
        for quota in quotas {
            self.quotas[Subject(scope: quota.scope, id: quota.subjectID, region: quota.region)] = quota
            if quota.region != nil { hasRegional = true }
        }
    }

    /// Counts what an active attempt holds (call once per attempt, or once per group with their sum).
    public mutating func count(partnerID: Int64, projectID: Int64, region: String, _ held: QuotaUsage) {
        guard !quotas.isEmpty else { return }
        for subject in subjects(partnerID: partnerID, projectID: projectID, region: region) where quotas[subject] != nil {
            usage[subject, default: .zero] = usage[subject, default: .zero] + held
        }
    }

    private func subjects(partnerID: Int64, projectID: Int64, region: String?) -> [Subject] {
        var result = [Subject(scope: .partner, id: partnerID, region: nil), Subject(scope: .project, id: projectID, region: nil)]
        if let region {
            result.append(Subject(scope: .partner, id: partnerID, region: region))
            result.append(Subject(scope: .project, id: projectID, region: region))
        }
        return result
    }

    /// The first quota (partner before project) that `request` would exceed: with `region` `nil`, among the quotas
    /// that apply everywhere; with a region, among those limited to that region (the caller checks both).
    public func exceeded(partnerID: Int64, projectID: Int64, region: String?, _ request: QuotaUsage) -> (quota: Quota, holding: QuotaUsage, resource: String)? {
        guard !quotas.isEmpty else { return nil }
        for subject in subjects(partnerID: partnerID, projectID: projectID, region: region) {
            if region != nil, subject.region == nil { continue }
            guard let quota = quotas[subject] else { continue }
            let held = usage[subject] ?? .zero
            if let limit = quota.gpus, request.gpus > 0, held.gpus + request.gpus > limit { return (quota, held, "gpus") }
            if let limit = quota.cpuMillis, held.cpuMillis + request.cpuMillis > limit { return (quota, held, "cpus") }
            if let limit = quota.memoryBytes, held.memoryBytes + request.memoryBytes > limit { return (quota, held, "memory") }
        }
        return nil
    }

    /// Whether some quota of this partner or project is limited to a region (those are checked host by host).
    public func hasRegionalQuota(partnerID: Int64, projectID: Int64) -> Bool {
        hasRegional && quotas.keys.contains { $0.region != nil && (($0.scope == .partner && $0.id == partnerID) || ($0.scope == .project && $0.id == projectID)) }
    }

    /// The reason's detail: `project ml-lab: gpus 8/8 held`.
    public static func describe(_ quota: Quota, holding: QuotaUsage, resource: String) -> String {
        let (held, limit): (String, String) =
            switch resource {
            case "gpus": ("\(holding.gpus)", "\(quota.gpus ?? 0)")
            case "cpus": (Quantity.formatCPUs(holding.cpuMillis), Quantity.formatCPUs(quota.cpuMillis ?? 0))
            default: (Quantity.formatBytes(holding.memoryBytes), Quantity.formatBytes(quota.memoryBytes ?? 0))
            }
        return "\(quota.label): \(resource) \(held)/\(limit) held"
    }
}
