/// A host as the scheduler sees it during one pass: what is still free on it.
public struct HostAvailability: Sendable, Hashable {
    public var id: Int64
    public var freeCPUMillis: Int
    public var freeMemoryBytes: Int64
    /// GPUs not held by any active attempt.
    public var freeGPUs: [GPU]
    /// All GPUs the host has, free or not (a host with GPUs is kept for GPU jobs where possible).
    public var totalGPUs: Int

    public init(id: Int64, freeCPUMillis: Int, freeMemoryBytes: Int64, freeGPUs: [GPU], totalGPUs: Int) {
        self.id = id
        self.freeCPUMillis = freeCPUMillis
        self.freeMemoryBytes = freeMemoryBytes
        self.freeGPUs = freeGPUs
        self.totalGPUs = totalGPUs
    }
}

/// A queued job as the scheduler sees it.
public struct PendingJob: Sendable, Hashable {
    public var id: Int64
    public var resources: ResourceRequest
    public var priority: Int

    public init(id: Int64, resources: ResourceRequest, priority: Int) {
        self.id = id
        self.resources = resources
        self.priority = priority
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
public enum Placer {
    public static func place(_ jobs: [PendingJob], on hosts: [HostAvailability]) -> [Placement] {
        var hosts = hosts
        var placements: [Placement] = []
        placements.reserveCapacity(min(jobs.count, hosts.count * 4))
        for job in jobs {
            guard let choice = bestHost(for: job.resources, among: hosts) else { continue }
            let gpus = choice.gpus
            hosts[choice.index].freeCPUMillis -= job.resources.cpuMillis
            hosts[choice.index].freeMemoryBytes -= job.resources.memoryBytes
            hosts[choice.index].freeGPUs.removeAll { gpus.contains($0.index) }
            placements.append(Placement(jobID: job.id, hostID: hosts[choice.index].id, gpuIndices: gpus))
        }
        return placements
    }

    /// The GPUs of `host` that `request` would get, lowest indices first, or `nil` when it does not fit.
    public static func fit(_ request: ResourceRequest, on host: HostAvailability) -> [Int]? {
        guard host.freeCPUMillis >= request.cpuMillis, host.freeMemoryBytes >= request.memoryBytes else { return nil }
        if request.gpus == 0 { return [] }
        let matching = host.freeGPUs.filter(request.accepts).map(\.index).sorted()
        guard matching.count >= request.gpus else { return nil }
        return Array(matching.prefix(request.gpus))
    }

    static func bestHost(for request: ResourceRequest, among hosts: [HostAvailability]) -> (index: Int, gpus: [Int])? {
        var best: (index: Int, gpus: [Int], score: (Int, Int64, Int64))?
        for (index, host) in hosts.enumerated() {
            guard let gpus = fit(request, on: host) else { continue }
            // Lower is better: matching GPUs left free beside the job (a CPU job counts all the host's GPUs, so it
            // goes to hosts without GPUs first), then CPU and memory left over.
            let spareGPUs = request.gpus == 0 ? host.totalGPUs : host.freeGPUs.filter(request.accepts).count - request.gpus
            let score = (spareGPUs, Int64(host.freeCPUMillis - request.cpuMillis), host.freeMemoryBytes - request.memoryBytes)
            if best == nil || score < best!.score { best = (index, gpus, score) }
        }
        return best.map { ($0.index, $0.gpus) }
    }
}
