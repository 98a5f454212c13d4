import ComityCore
import Foundation

/// One partner's standing in the commons (`comity shares`).
public struct PartnerShare: Codable, Sendable, Hashable {
    public var partner: String
    /// Decayed capacity offered, in weighted-GPU, CPU-core and GiB hours.
    public var contributed: ShareVector
    /// Grants, as fractions of each pool.
    public var granted: ShareVector
    /// Fractions of each pool it is entitled to.
    public var entitled: ShareVector
    /// Decayed usage, in weighted-GPU, CPU-core and GiB hours.
    public var used: ShareVector
    /// What its attempts hold now (weighted GPUs, CPU cores, GiB).
    public var holding: ShareVector
    /// Dominant ratio of its share (half held now, half decayed usage) to its entitlement: below 1 it is owed.
    public var ratio: Double
    /// 2^-ratio: 1 with nothing used, 0.5 at its entitlement.
    public var factor: Double
    /// Holding more than its entitlement now: its guests may be reclaimed.
    public var borrowing: Bool
    public var borrowLimit: Double?
    public var lendLimit: Double?
    public var lendsNonReclaimable: Bool

    public init(
        partner: String, contributed: ShareVector, granted: ShareVector, entitled: ShareVector, used: ShareVector, holding: ShareVector, ratio: Double,
        factor: Double, borrowing: Bool, borrowLimit: Double?, lendLimit: Double?, lendsNonReclaimable: Bool
    ) {
        self.partner = partner
        self.contributed = contributed
        self.granted = granted
        self.entitled = entitled
        self.used = used
        self.holding = holding
        self.ratio = ratio
        self.factor = factor
        self.borrowing = borrowing
        self.borrowLimit = borrowLimit
        self.lendLimit = lendLimit
        self.lendsNonReclaimable = lendsNonReclaimable
    }
}

public struct SharesReport: Codable, Sendable {
    /// The pools' sizes now (weighted GPUs, CPU cores, GiB of active hosts).
    public var capacity: ShareVector
    public var halfLifeSeconds: Int64
    /// Contribution and usage are accounted up to here.
    public var accountedAt: Date
    public var partners: [PartnerShare]
    public var gpuWeights: [GPUWeight]

    public init(capacity: ShareVector, halfLifeSeconds: Int64, accountedAt: Date, partners: [PartnerShare], gpuWeights: [GPUWeight]) {
        self.capacity = capacity
        self.halfLifeSeconds = halfLifeSeconds
        self.accountedAt = accountedAt
        self.partners = partners
        self.gpuWeights = gpuWeights
    }
}

public struct GPUWeight: Codable, Sendable, Hashable {
    /// Contained in the model name, case-insensitively (`H100`).
    public var pattern: String
    public var weight: Double

    public init(pattern: String, weight: Double) {
        self.pattern = pattern
        self.weight = weight
    }
}

public struct GrantRequest: Codable, Sendable {
    public var partner: String
    public var kind: ResourceKind
    /// Fraction of the pool, in (0, 1].
    public var fraction: Double
    public var reason: String?

    public init(partner: String, kind: ResourceKind, fraction: Double, reason: String? = nil) {
        self.partner = partner
        self.kind = kind
        self.fraction = fraction
        self.reason = reason
    }
}

public struct GrantView: Codable, Sendable, Hashable {
    public var id: Int64
    public var partner: String
    public var kind: ResourceKind
    public var fraction: Double
    public var reason: String
    public var createdBy: String
    public var createdAt: Date
    public var revokedAt: Date?

    public init(id: Int64, partner: String, kind: ResourceKind, fraction: Double, reason: String, createdBy: String, createdAt: Date, revokedAt: Date?) {
        self.id = id
        self.partner = partner
        self.kind = kind
        self.fraction = fraction
        self.reason = reason
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }
}

/// Sets a quota (replacing the one with the same scope, subject and region). A limit left out is unlimited.
public struct QuotaRequest: Codable, Sendable {
    public var scope: Quota.Scope
    /// The partner's or project's name.
    public var subject: String
    public var region: String?
    public var gpus: Int?
    /// CPUs as in a job file (`8`, `0.5`).
    public var cpus: String?
    /// Memory as in a job file (`64Gi`).
    public var memory: String?

    public init(scope: Quota.Scope, subject: String, region: String? = nil, gpus: Int? = nil, cpus: String? = nil, memory: String? = nil) {
        self.scope = scope
        self.subject = subject
        self.region = region
        self.gpus = gpus
        self.cpus = cpus
        self.memory = memory
    }
}

public struct QuotaView: Codable, Sendable, Hashable {
    public var id: Int64
    public var scope: Quota.Scope
    public var subject: String
    /// The partner the subject belongs to (itself for a partner quota).
    public var partner: String
    public var region: String?
    public var gpus: Int?
    public var cpuMillis: Int?
    public var memoryBytes: Int64?
    /// What counts against it now.
    public var holding: QuotaUsage
    public var setBy: String
    public var setAt: Date

    public init(
        id: Int64, scope: Quota.Scope, subject: String, partner: String, region: String?, gpus: Int?, cpuMillis: Int?, memoryBytes: Int64?,
        holding: QuotaUsage, setBy: String, setAt: Date
    ) {
        self.id = id
        self.scope = scope
        self.subject = subject
        self.partner = partner
        self.region = region
        self.gpus = gpus
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.holding = holding
        self.setBy = setBy
        self.setAt = setAt
    }
}

/// A partner's borrowing and lending limits (null: unlimited).
public struct LendingRequest: Codable, Sendable, Hashable {
    /// Fraction of each pool it may hold beyond its entitlement.
    public var borrowLimit: Double?
    /// Fraction of its own hosts' capacity guests may hold at once.
    public var lendLimit: Double?
    /// Its hosts take inference services as guests and never reclaim them.
    public var lendsNonReclaimable: Bool

    public init(borrowLimit: Double?, lendLimit: Double?, lendsNonReclaimable: Bool) {
        self.borrowLimit = borrowLimit
        self.lendLimit = lendLimit
        self.lendsNonReclaimable = lendsNonReclaimable
    }
}

/// `comity usage`: resource-hours used and contributed, grouped.
public struct UsageReport: Codable, Sendable {
    public enum Grouping: String, Codable, Sendable, CaseIterable {
        case partner
        case project
        case host
        case region
    }

    public struct Row: Codable, Sendable, Hashable {
        /// The partner, project, host or region.
        public var key: String
        /// Weighted-GPU, CPU-core and GiB hours used by jobs (undecayed).
        public var used: ShareVector
        /// The same, offered by hosts (none for projects).
        public var contributed: ShareVector

        public init(key: String, used: ShareVector, contributed: ShareVector) {
            self.key = key
            self.used = used
            self.contributed = contributed
        }
    }

    public var by: Grouping
    public var partner: String?
    public var since: Date
    public var until: Date
    public var rows: [Row]

    public init(by: Grouping, partner: String?, since: Date, until: Date, rows: [Row]) {
        self.by = by
        self.partner = partner
        self.since = since
        self.until = until
        self.rows = rows
    }
}
