/// A running guest attempt, as reclaim planning sees it.
public struct RunningGuest: Sendable, Hashable {
    public var attemptID: Int64
    public var jobID: Int64
    public var hostID: Int64
    /// The job's partner (the borrower).
    public var partnerID: Int64
    public var priority: Int
    /// Seconds since some epoch: newer guests are preempted first among equal priorities.
    public var startedAt: Double
    public var cpuMillis: Int
    public var memoryBytes: Int64
    public var gpus: [GPU]
    /// What it counts for in fair sharing.
    public var holding: ShareVector
    /// Whether it may be preempted at all: not a service that did not opt in, not on capacity lent as
    /// non-reclaimable, not preempted within the cool-down window, not already being stopped.
    public var reclaimable: Bool

    public init(
        attemptID: Int64, jobID: Int64, hostID: Int64, partnerID: Int64, priority: Int, startedAt: Double, cpuMillis: Int, memoryBytes: Int64,
        gpus: [GPU], holding: ShareVector, reclaimable: Bool
    ) {
        self.attemptID = attemptID
        self.jobID = jobID
        self.hostID = hostID
        self.partnerID = partnerID
        self.priority = priority
        self.startedAt = startedAt
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.gpus = gpus
        self.holding = holding
        self.reclaimable = reclaimable
    }
}

/// Chooses which guests to preempt so that a waiting job can start.
///
/// A guest may be a victim only if it is reclaimable and its partner is borrowing: preempting it leaves the partner
/// holding at least its entitlement (a guest inside its partner's entitlement is not preemptible; that is what an
/// entitlement means). Victims are taken lowest priority first, then newest, until the job fits, then any victim
/// the job does not need after all is spared. Among hosts, the plan with the fewest victims wins, then the one
/// whose most important victim has the lowest priority, then the host given first.
public enum Reclaim {
    public struct Plan: Sendable, Hashable {
        public var hostID: Int64
        public var victims: [RunningGuest]
    }

    /// - Parameters:
    ///   - request: what the waiting job needs.
    ///   - hosts: the hosts it may legally use (the caller checked the rules), with what is free on them now.
    ///   - guests: running guests on those hosts.
    ///   - standings: each borrower's standing (what it holds now, its entitlement).
    ///   - capacity: the pools' sizes.
    public static func plan(
        for request: ResourceRequest, on hosts: [HostAvailability], guests: [RunningGuest], standings: [Int64: ShareStanding], capacity: ShareVector
    ) -> Plan? {
        let byHost = Dictionary(grouping: guests.filter(\.reclaimable), by: \.hostID)
        var best: (plan: Plan, maxPriority: Int)?
        for host in hosts {
            guard let candidates = byHost[host.id] else { continue }
            let ordered = candidates.sorted { ($0.priority, -$0.startedAt, -$0.attemptID) < ($1.priority, -$1.startedAt, -$1.attemptID) }
            guard let victims = victims(for: request, on: host, ordered: ordered, standings: standings, capacity: capacity) else { continue }
            let maxPriority = victims.map(\.priority).max() ?? .min
            if let current = best,
                (current.plan.victims.count, current.maxPriority) <= (victims.count, maxPriority)
            {
                continue
            }
            best = (Plan(hostID: host.id, victims: victims), maxPriority)
        }
        return best?.plan
    }

    static func victims(
        for request: ResourceRequest, on host: HostAvailability, ordered: [RunningGuest], standings: [Int64: ShareStanding], capacity: ShareVector
    ) -> [RunningGuest]? {
        var standings = standings
        var chosen: [RunningGuest] = []
        var fits = Placer.fit(request, on: host) != nil
        for guest in ordered where !fits {
            guard var standing = standings[guest.partnerID] else { continue }
            standing.allocated -= guest.holding
            // The borrower must stay at or above its entitlement once this guest is gone.
            guard standing.holdsEntitlement(capacity: capacity) else { continue }
            standings[guest.partnerID] = standing
            chosen.append(guest)
            fits = Placer.fit(request, on: freed(host, by: chosen)) != nil
        }
        guard fits else { return nil }
        // Spare, most important first, any victim the job can do without.
        for guest in chosen.reversed() {
            let without = chosen.filter { $0.attemptID != guest.attemptID }
            if Placer.fit(request, on: freed(host, by: without)) != nil { chosen = without }
        }
        return chosen
    }

    /// The host as it would be once `victims` stopped.
    static func freed(_ host: HostAvailability, by victims: [RunningGuest]) -> HostAvailability {
        var host = host
        for victim in victims {
            host.freeCPUMillis += victim.cpuMillis
            host.freeMemoryBytes += victim.memoryBytes
            host.freeGPUs += victim.gpus
        }
        host.freeGPUs.sort { $0.index < $1.index }
        return host
    }
}
