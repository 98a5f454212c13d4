/// What a job needs, all on one host.
public struct ResourceRequest: Sendable, Hashable, Codable {
    /// CPU in millicores (`cpus: 0.5` is 500).
    public var cpuMillis: Int
    public var memoryBytes: Int64
    public var gpus: Int
    /// A model name the host's GPU model must contain, case-insensitively (`H100` matches `NVIDIA H100 80GB HBM3`).
    public var gpuModel: String?
    /// Minimum memory of each assigned GPU.
    public var gpuMemoryBytes: Int64?

    public init(cpuMillis: Int, memoryBytes: Int64, gpus: Int = 0, gpuModel: String? = nil, gpuMemoryBytes: Int64? = nil) {
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.gpus = gpus
        self.gpuModel = gpuModel
        self.gpuMemoryBytes = gpuMemoryBytes
    }

    /// Whether a GPU can serve this request's per-GPU constraints.
    public func accepts(_ gpu: GPU) -> Bool {
        if let model = gpuModel, !gpu.model.lowercased().contains(model.lowercased()) { return false }
        if let memory = gpuMemoryBytes, gpu.memoryBytes < memory { return false }
        return true
    }
}

/// One GPU of a host.
public struct GPU: Sendable, Hashable, Codable {
    public var index: Int
    public var uuid: String
    public var model: String
    public var memoryBytes: Int64

    public init(index: Int, uuid: String, model: String, memoryBytes: Int64) {
        self.index = index
        self.uuid = uuid
        self.model = model
        self.memoryBytes = memoryBytes
    }
}

/// What a host offers to the pool.
public struct HostResources: Sendable, Hashable, Codable {
    public var cpuMillis: Int
    public var memoryBytes: Int64
    public var gpus: [GPU]

    public init(cpuMillis: Int, memoryBytes: Int64, gpus: [GPU] = []) {
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.gpus = gpus
    }
}
