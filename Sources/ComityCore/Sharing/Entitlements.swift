import Foundation

/// A share of a pool that an admin gives a partner regardless of its hardware ("a lab with no hardware gets 2% of
/// the GPU pool").
public struct Grant: Sendable, Hashable, Codable {
    public var partnerID: Int64
    public var kind: ResourceKind
    /// Fraction of the pool of `kind`, in (0, 1].
    public var fraction: Double

    public init(partnerID: Int64, kind: ResourceKind, fraction: Double) {
        self.partnerID = partnerID
        self.kind = kind
        self.fraction = fraction
    }
}

/// Entitlements: each partner's fair fraction of each pool.
///
/// For each resource kind, grants come off the top (scaled down together if they add up to more than the whole
/// pool); the rest is divided in proportion to measured, decayed contribution. A partner with neither contribution
/// nor grant in a kind is entitled to none of it (it may still borrow idle capacity).
///
/// A grant of one pool implies the same fraction of the pools the partner was not granted explicitly: "2% of the GPU
/// pool" comes with the CPUs and memory that GPU jobs need (otherwise the CPUs of its GPU jobs would rank the
/// grantee last).
public enum Entitlements {
    public static func compute(contributions: [Int64: ShareVector], grants explicit: [Grant]) -> [Int64: ShareVector] {
        var grants = explicit
        for (partner, given) in Dictionary(grouping: explicit, by: \.partnerID) {
            let fraction = given.map(\.fraction).max() ?? 0
            for kind in ResourceKind.allCases where !given.contains(where: { $0.kind == kind }) {
                grants.append(Grant(partnerID: partner, kind: kind, fraction: fraction))
            }
        }
        var result: [Int64: ShareVector] = [:]
        for partner in contributions.keys { result[partner] = .zero }
        for grant in grants where result[grant.partnerID] == nil { result[grant.partnerID] = .zero }
        for kind in ResourceKind.allCases {
            let granted = grants.filter { $0.kind == kind }
            let grantedTotal = granted.reduce(0) { $0 + max(0, $1.fraction) }
            let scale = grantedTotal > 1 ? 1 / grantedTotal : 1
            for grant in granted { result[grant.partnerID]![kind] += max(0, grant.fraction) * scale }
            let rest = max(0, 1 - grantedTotal * scale)
            let contributed = contributions.values.reduce(0) { $0 + max(0, $1[kind]) }
            guard contributed > 0 else { continue }
            for (partner, vector) in contributions where vector[kind] > 0 {
                result[partner]![kind] += rest * vector[kind] / contributed
            }
        }
        return result
    }
}

/// Where one partner (or project) stands: what it is entitled to, what it used lately, what it holds now.
public struct ShareStanding: Sendable, Hashable {
    /// Fractions of each pool (partners: from ``Entitlements``; projects: their partner's, split by shares).
    public var entitled: ShareVector
    /// Decayed usage as a fraction of all decayed usage of the same level.
    public var usedShare: ShareVector
    /// What its running attempts hold now (absolute).
    public var allocated: ShareVector

    public init(entitled: ShareVector, usedShare: ShareVector = .zero, allocated: ShareVector = .zero) {
        self.entitled = entitled
        self.usedShare = usedShare
        self.allocated = allocated
    }

    /// Below this, an entitlement counts as none.
    static let epsilon = 1e-9

    /// The dominant ratio of what it has to what it is entitled to (DRF): for each kind, half what it holds now and
    /// half its decayed usage, over its entitlement; the largest kind counts. Below 1: under its entitlement.
    /// Holding what it is not entitled to gives a very large ratio (it borrows), still ordered by how much.
    /// A partner entitled to nothing comes after every entitled one, even before it holds anything.
    public func ratio(capacity: ShareVector) -> Double {
        let held = allocated.fraction(of: capacity)
        let entitledToSome = ResourceKind.allCases.contains { entitled[$0] > Self.epsilon }
        var worst = 0.0
        var total = 0.0
        for kind in ResourceKind.allCases {
            let share = 0.5 * held[kind] + 0.5 * usedShare[kind]
            total += share
            guard share > 0 else { continue }
            worst = max(worst, share / max(entitled[kind], Self.epsilon))
        }
        return entitledToSome ? worst : Self.unentitled * (1 + total)
    }

    /// The ratio of a partner entitled to nothing, holding and having used nothing.
    static let unentitled = 1e12

    /// What it holds now over what it is entitled to, dominant kind (no history): at or above 1 it is borrowing.
    public func heldRatio(capacity: ShareVector) -> Double {
        let held = allocated.fraction(of: capacity)
        var worst = 0.0
        for kind in ResourceKind.allCases where held[kind] > 0 {
            worst = max(worst, held[kind] / max(entitled[kind], Self.epsilon))
        }
        return worst
    }

    /// Whether it holds at least its entitlement (dominant pool): true for a partner entitled to nothing.
    public func holdsEntitlement(capacity: ShareVector) -> Bool {
        ResourceKind.allCases.allSatisfy { entitled[$0] <= Self.epsilon } || heldRatio(capacity: capacity) >= 1 - 1e-9
    }

    /// Slurm's form of the same standing: 2^-ratio; 1 with nothing used, 0.5 at the entitlement, towards 0 above.
    public func factor(capacity: ShareVector) -> Double { exp2(-ratio(capacity: capacity)) }
}
