/// What an attempt used, as its agent measured it while it ran (sent with the finish report).
public struct AttemptUsage: Codable, Sendable, Hashable {
    /// One entry per assigned GPU, in the order assigned.
    public var gpus: [GPUUsage]
    /// The time between two samples, in seconds.
    public var sampleIntervalSeconds: Double

    public init(gpus: [GPUUsage], sampleIntervalSeconds: Double) {
        self.gpus = gpus
        self.sampleIntervalSeconds = sampleIntervalSeconds
    }

    /// The largest report a server accepts: one entry per GPU a host may have.
    public static let maxGPUs = 1024

    /// The first problem of a report from an agent, naming its field (`usage.gpus[0].uuid`), or `nil` when it is
    /// well-formed.
    public var problem: (field: String, message: String)? {
        guard gpus.count <= Self.maxGPUs else { return ("usage.gpus", "expected at most \(Self.maxGPUs) GPUs") }
        guard sampleIntervalSeconds.isFinite, sampleIntervalSeconds >= 0, sampleIntervalSeconds <= 86_400 else {
            return ("usage.sample_interval_seconds", "expected 0 to 86400 seconds")
        }
        for (position, gpu) in gpus.enumerated() {
            let prefix = "usage.gpus[\(position)]"
            guard !gpu.uuid.isEmpty, gpu.uuid.utf8.count <= 200 else {
                return ("\(prefix).uuid", "expected a GPU UUID of 1 to 200 bytes")
            }
            guard gpu.samples >= 0 else { return ("\(prefix).samples", "expected at least 0") }
            guard gpu.maxMemoryBytes >= 0 else { return ("\(prefix).max_memory_bytes", "expected at least 0") }
            if let bytes = gpu.maxDeviceMemoryBytes, bytes < 0 {
                return ("\(prefix).max_device_memory_bytes", "expected at least 0")
            }
            if let mean = gpu.meanUtilizationPercent, !(mean.isFinite && mean >= 0 && mean <= 100) {
                return ("\(prefix).mean_utilization_percent", "expected 0 to 100")
            }
            if let max = gpu.maxUtilizationPercent, !(0...100).contains(max) {
                return ("\(prefix).max_utilization_percent", "expected 0 to 100")
            }
        }
        return nil
    }
}

/// One GPU's use by one attempt, from `nvidia-smi` samples taken while it ran.
public struct GPUUsage: Codable, Sendable, Hashable {
    /// The GPU's (or MIG device's) UUID.
    public var uuid: String
    /// How many samples were taken.
    public var samples: Int
    /// The most GPU memory the attempt's processes held at once (`--query-compute-apps`), in bytes.
    public var maxMemoryBytes: Int64
    /// The most memory in use on the whole device (`memory.used`; every process, the attempt's or not); `nil` where
    /// the device does not report it (MIG devices).
    public var maxDeviceMemoryBytes: Int64?
    /// The mean of the sampled `utilization.gpu` in percent; `nil` where the device does not report it (MIG devices).
    public var meanUtilizationPercent: Double?
    /// The highest sampled `utilization.gpu` in percent.
    public var maxUtilizationPercent: Int?

    public init(
        uuid: String,
        samples: Int,
        maxMemoryBytes: Int64,
        maxDeviceMemoryBytes: Int64? = nil,
        meanUtilizationPercent: Double? = nil,
        maxUtilizationPercent: Int? = nil
    ) {
        self.uuid = uuid
        self.samples = samples
        self.maxMemoryBytes = maxMemoryBytes
        self.maxDeviceMemoryBytes = maxDeviceMemoryBytes
        self.meanUtilizationPercent = meanUtilizationPercent
        self.maxUtilizationPercent = maxUtilizationPercent
    }
}
