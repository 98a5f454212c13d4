/// A host as the scheduler sees it during one pass: what is still free on it.
public struct HostAvailability: Sendable, Hashable {
    public var id: Int64
    public var freeCPUMillis: Int
    public var freeMemoryBytes: Int64
    /// GPUs not held by any active attempt.
    public var freeGPUs: [GPU]
    /// All GPUs the host has, free or not (a host with GPUs is kept for GPU jobs where possible).
    public var totalGPUs: Int
    /// The owner: its own jobs go to its own hosts first.
    public var partnerID: Int64
    /// Hosts with the same key get the same sovereignty verdict for every job (see ``PolicyHostKey``).
    public var policyKey: Int
    /// For quotas limited to a region.
    public var region: String

    public init(
        id: Int64, freeCPUMillis: Int, freeMemoryBytes: Int64, freeGPUs: [GPU], totalGPUs: Int, partnerID: Int64 = 0, policyKey: Int = 0,
        region: String = ""
    ) {
        self.id = id
        self.region = region
        self.freeCPUMillis = freeCPUMillis
        self.freeMemoryBytes = freeMemoryBytes
        self.freeGPUs = freeGPUs
        self.totalGPUs = totalGPUs
        self.partnerID = partnerID
        self.policyKey = policyKey
    }
}

/// A queued job as the scheduler sees it.
public struct PendingJob: Sendable, Hashable {
    public var id: Int64
    public var resources: ResourceRequest
    public var priority: Int
    public var partnerID: Int64
    public var projectID: Int64
    /// Jobs with the same class get the same sovereignty verdict on every host (same project, kind, inputs and
    /// runtime bound).
    public var policyClass: Int

    public init(id: Int64, resources: ResourceRequest, priority: Int, partnerID: Int64 = 0, projectID: Int64 = 0, policyClass: Int = 0) {
        self.id = id
        self.projectID = projectID
        self.resources = resources
        self.priority = priority
        self.partnerID = partnerID
        self.policyClass = policyClass
    }
}

/// A decision: run this job on this host with these GPUs.
public struct Placement: Sendable, Hashable {
    public var jobID: Int64
    public var hostID: Int64
    /// Indices of the GPUs given to the job, ascending.
    public var gpuIndices: [Int]

    public init(jobID: Int64, hostID: Int64, gpuIndices: [Int]) {
        self.jobID = jobID
        self.hostID = hostID
        self.gpuIndices = gpuIndices
    }
}

/// Chooses hosts for queued jobs. Pure: the same inputs give the same placements.
///
/// Jobs are taken in the order given (the caller orders by priority, then submission); each job goes to the
/// fitting host with the least waste: a GPU job to the host whose matching free GPUs are fewest (big GPU hosts stay
/// free for big jobs), a CPU job to a host without GPUs where one fits, then to the one with the least CPU left.
/// A job that fits nowhere is skipped; later, smaller jobs may still be placed (no reservation yet).
///
/// Only hosts that `eligible(policyClass, policyKey)` admits are considered (the sovereignty engine's verdict,
/// memoized by the caller); among them, the job's own partner's hosts come first.
public enum Placer {
    public static func place(
        _ jobs: [PendingJob], on hosts: [HostAvailability], eligible: ((_ policyClass: Int, _ policyKey: Int) -> Bool)? = nil
    ) -> [Placement] {
        var session = Session(hosts)
        var placements: [Placement] = []
        placements.reserveCapacity(min(jobs.count, hosts.count * 4))
        for job in jobs {
            if let placement = session.place(job, admits: { host in eligible?(job.policyClass, host.policyKey) ?? true }) {
                placements.append(placement)
            }
        }
        return placements
    }

    /// One pass's placements, one job at a time (the caller decides the order, e.g. by fair share): what is free
    /// shrinks with each placement.
    public struct Session {
        public private(set) var hosts: [HostAvailability]
        // Hosts with the same free capacity score the same for every job, so each job scores one host per group of
        // look-alikes (most hosts of a pool are alike, and idle ones stay alike) instead of every host.
        private var groups: HostGroups
        // Capacity only shrinks during a pass: a request that fit nowhere will fit nowhere later in the same pass.
        private var fitsNowhere: Set<NowhereKey> = []
        private var matchers: [ResourceRequest: Matcher] = [:]
        /// Host id → index in `hosts`, built the first time a job excludes hosts (only service replicas do).
        private var indexByID: [Int64: Int]?

        public init(_ hosts: [HostAvailability]) {
            self.hosts = hosts
            self.groups = HostGroups(hosts)
        }

        /// A session whose host groups are known: `groups` must be ``HostGroups`` of exactly `hosts` (see
        /// ``HostGroups/moving(_:from:to:)``, which derives them from a pool's groups kept between passes).
        package init(_ hosts: [HostAvailability], groups: HostGroups) {
            self.hosts = hosts
            self.groups = groups
        }

        /// Places `job` on the best fitting host that `admits` accepts, or returns `nil`.
        ///
        /// - Parameters:
        ///   - cacheKey: jobs with the same request and key are admitted by the same hosts, and anything that
        ///     `admits` reads only grows stricter during the pass (a job that fit nowhere is not tried again).
        ///   - excluding: ids of hosts the job may not go to (another replica of its service runs there); jobs with
        ///     the same `cacheKey` must exclude the same hosts or more as the pass goes on.
        public mutating func place(
            _ job: PendingJob, cacheKey: Int64 = 0, excluding: Set<Int64> = [], admits: (HostAvailability) -> Bool
        ) -> Placement? {
            let request = job.resources
            let key = NowhereKey(request: request, policyClass: job.policyClass, partnerID: job.partnerID, extra: cacheKey)
            if fitsNowhere.contains(key) { return nil }
            var matcher = matchers[request] ?? Matcher(request)
            defer { matchers[request] = matcher }
            let candidates = excluding.isEmpty ? groups.representatives : candidates(excluding: excluding)
            guard
                let index = bestHost(
                    for: request, among: hosts, candidates: candidates, matcher: &matcher, admits: admits, partnerID: job.partnerID)
            else {
                fitsNowhere.insert(key)
                return nil
            }
            let gpus = Placer.gpus(for: request, on: hosts[index], matcher: &matcher)
            groups.remove(index, shape: HostShape(hosts[index]))
            hosts[index].freeCPUMillis -= request.cpuMillis
            hosts[index].freeMemoryBytes -= request.memoryBytes
            if !gpus.isEmpty { hosts[index].freeGPUs.removeAll { gpus.contains($0.index) } }
            groups.insert(index, shape: HostShape(hosts[index]))
            return Placement(jobID: job.id, hostID: hosts[index].id, gpuIndices: gpus)
        }

        /// One host per group of look-alikes, as ``HostGroups/representatives``, but never an excluded one: a group
        /// whose representative is excluded is represented by its next member that is not.
        mutating func candidates(excluding ids: Set<Int64>) -> [Int] {
            if indexByID == nil {
                indexByID = Dictionary(hosts.enumerated().map { ($0.element.id, $0.offset) }, uniquingKeysWith: { first, _ in first })
            }
            let excluded = Set(ids.compactMap { indexByID?[$0] })
            guard !excluded.isEmpty else { return groups.representatives }
            let hosts = self.hosts
            return groups.representatives(excluding: excluded) { HostShape(hosts[$0]) }
        }
    }

    struct NowhereKey: Hashable {
        var request: ResourceRequest
        var policyClass: Int
        var partnerID: Int64
        var extra: Int64
    }

    /// What scoring sees of a host: two hosts with the same shape fit and score alike for every request.
    package struct HostShape: Hashable, Sendable {
        var partnerID: Int64
        var policyKey: Int
        var region: String
        var freeCPUMillis: Int
        var freeMemoryBytes: Int64
        var totalGPUs: Int
        /// (model, memory) of each free GPU, sorted; indices and UUIDs do not matter for fit or score.
        var freeGPUs: [GPUShape]

        package struct GPUShape: Hashable, Comparable, Sendable {
            var model: String
            var memoryBytes: Int64
            package static func < (a: GPUShape, b: GPUShape) -> Bool { (a.model, a.memoryBytes) < (b.model, b.memoryBytes) }
        }

        package init(_ host: HostAvailability) {
            partnerID = host.partnerID
            policyKey = host.policyKey
            region = host.region
            freeCPUMillis = host.freeCPUMillis
            freeMemoryBytes = host.freeMemoryBytes
            totalGPUs = host.totalGPUs
            freeGPUs = host.freeGPUs.map { GPUShape(model: $0.model, memoryBytes: $0.memoryBytes) }.sorted()
        }
    }

    /// Hosts grouped by shape; each group is represented by its lowest host index, which is the one a scan over all
    /// hosts would pick among equals.
    ///
    /// A scheduling pass keeps the groups of its pool's idle hosts between passes (hashing the shapes of 10,000 hosts
    /// took about as long as placing 2,000 jobs) and moves only the hosts that hold work (``moving(_:from:to:)``).
    package struct HostGroups: Equatable, Sendable {
        /// Host indices of each shape, in descending order (the lowest, the representative, is last).
        private var members: [HostShape: [Int]] = [:]
        private(set) var representatives: [Int] = []

        package init(_ hosts: [HostAvailability]) {
            self.init(shapes: hosts.map(HostShape.init))
        }

        /// The groups of hosts with these shapes (index for index).
        package init(shapes: [HostShape]) {
            for index in shapes.indices.reversed() { members[shapes[index], default: []].append(index) }
            representatives = members.values.map { $0.last! }.sorted()
        }

        /// These groups with each host of `indices` moved from its shape in `from` to its shape in `to`: the groups of
        /// hosts `to` when these groups are those of `from` and only `indices` differ.
        package func moving(_ indices: [Int], from: [HostShape], to: [HostAvailability]) -> HostGroups {
            var groups = self
            for index in indices {
                let shape = HostShape(to[index])
                guard shape != from[index] else { continue }
                groups.remove(index, shape: from[index])
                groups.insert(index, shape: shape)
            }
            return groups
        }

        /// The representatives, with each excluded one replaced by the lowest member of its group that is not
        /// excluded (dropped when every member is), ascending.
        func representatives(excluding excluded: Set<Int>, shape: (Int) -> HostShape) -> [Int] {
            var result: [Int] = []
            result.reserveCapacity(representatives.count)
            for index in representatives {
                if !excluded.contains(index) {
                    result.append(index)
                } else if let group = members[shape(index)], let next = group.reversed().first(where: { !excluded.contains($0) }) {
                    result.append(next)
                }
            }
            return result.sorted()
        }

        // A group is taken out of the dictionary while it changes: changed in place there, it was copied whole on
        // every placement (thousands of idle hosts share a shape), and found by a linear scan.
        mutating func remove(_ index: Int, shape: HostShape) {
            guard var group = members.removeValue(forKey: shape) else { return }
            let position = Self.firstBelow(index + 1, in: group)
            guard position < group.count, group[position] == index else {
                members[shape] = group
                return
            }
            let wasRepresentative = position == group.count - 1
            group.remove(at: position)
            if !group.isEmpty { members[shape] = group }
            if wasRepresentative {
                removeRepresentative(index)
                if let next = group.last { insertRepresentative(next) }
            }
        }

        mutating func insert(_ index: Int, shape: HostShape) {
            var group = members.removeValue(forKey: shape) ?? []
            let previous = group.last
            // Keep descending order.
            group.insert(index, at: Self.firstBelow(index, in: group))
            let representative = group.last
            members[shape] = group
            if representative != previous {
                if let previous { removeRepresentative(previous) }
                insertRepresentative(index)
            }
        }

        /// The first position of descending `group` whose index is below `index`.
        static func firstBelow(_ index: Int, in group: [Int]) -> Int {
            partitionPoint(group.count) { group[$0] >= index }
        }

        /// The first position of ascending `representatives` whose index is not below `index`.
        private func firstNotBelow(_ index: Int) -> Int {
            Self.partitionPoint(representatives.count) { representatives[$0] < index }
        }

        /// Binary search: the first position in `0..<count` where `isBefore` turns false (it must hold for a prefix).
        private static func partitionPoint(_ count: Int, isBefore: (Int) -> Bool) -> Int {
            var low = 0
            var high = count
            while low < high {
                let middle = (low + high) / 2
                if isBefore(middle) { low = middle + 1 } else { high = middle }
            }
            return low
        }

        private mutating func removeRepresentative(_ index: Int) {
            let position = firstNotBelow(index)
            if position < representatives.count, representatives[position] == index { representatives.remove(at: position) }
        }

        private mutating func insertRepresentative(_ index: Int) {
            let position = firstNotBelow(index + 1)
            representatives.insert(index, at: position)
        }
    }

    /// The GPUs of `host` that `request` would get, lowest indices first, or `nil` when it does not fit.
    public static func fit(_ request: ResourceRequest, on host: HostAvailability) -> [Int]? {
        var matcher = Matcher(request)
        guard host.freeCPUMillis >= request.cpuMillis, host.freeMemoryBytes >= request.memoryBytes,
            matchingGPUs(on: host, matcher: &matcher) >= request.gpus
        else { return nil }
        return gpus(for: request, on: host, matcher: &matcher)
    }

    /// Decides whether GPUs suit a request, remembering the answer per GPU model (model matching lower-cases
    /// strings, which is too slow to repeat for every host of every job).
    struct Matcher {
        let request: ResourceRequest
        let model: String?
        var models: [String: Bool] = [:]

        init(_ request: ResourceRequest) {
            self.request = request
            self.model = request.gpuModel?.lowercased()
        }

        mutating func accepts(_ gpu: GPU) -> Bool {
            if let memory = request.gpuMemoryBytes, gpu.memoryBytes < memory { return false }
            guard let model else { return true }
            if let known = models[gpu.model] { return known }
            let accepted = gpu.model.lowercased().contains(model)
            models[gpu.model] = accepted
            return accepted
        }
    }

    static func matchingGPUs(on host: HostAvailability, matcher: inout Matcher) -> Int {
        if matcher.request.gpus == 0 { return 0 }
        var count = 0
        for gpu in host.freeGPUs where matcher.accepts(gpu) { count += 1 }
        return count
    }

    static func gpus(for request: ResourceRequest, on host: HostAvailability, matcher: inout Matcher) -> [Int] {
        if request.gpus == 0 { return [] }
        var matching: [Int] = []
        for gpu in host.freeGPUs where matcher.accepts(gpu) { matching.append(gpu.index) }
        return Array(matching.sorted().prefix(request.gpus))
    }

    /// The eligible fitting host with the least waste. Lower scores are better: the job's own partner's hosts first,
    /// then matching GPUs left free beside the job (a CPU job counts all the host's GPUs, so it goes to hosts
    /// without GPUs first), then CPU and memory left over.
    static func bestHost(
        for request: ResourceRequest, among hosts: [HostAvailability], candidates: [Int], matcher: inout Matcher,
        admits: (HostAvailability) -> Bool = { _ in true }, partnerID: Int64 = 0
    ) -> Int? {
        var best: Int?
        var bestScore = (Int.max, Int.max, Int.max, Int64.max)
        for index in candidates {
            let host = hosts[index]
            guard host.freeCPUMillis >= request.cpuMillis, host.freeMemoryBytes >= request.memoryBytes else { continue }
            let spareGPUs: Int
            if request.gpus == 0 {
                spareGPUs = host.totalGPUs
            } else {
                guard host.freeGPUs.count >= request.gpus else { continue }
                let matching = matchingGPUs(on: host, matcher: &matcher)
                guard matching >= request.gpus else { continue }
                spareGPUs = matching - request.gpus
            }
            // Last: the caller's admission (the rules, sharing) costs more than the capacity checks.
            guard admits(host) else { continue }
            let guest = host.partnerID == partnerID ? 0 : 1
            let score = (guest, spareGPUs, host.freeCPUMillis - request.cpuMillis, host.freeMemoryBytes - request.memoryBytes)
            if score < bestScore {
                best = index
                bestScore = score
                if score == (0, 0, 0, 0) { break }  // a perfect fit: nothing can beat it
            }
        }
        return best
    }
}
