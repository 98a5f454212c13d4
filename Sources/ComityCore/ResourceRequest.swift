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

/// One schedulable GPU of a host: a whole GPU, or a MIG device (a slice of a GPU in MIG mode).
///
/// A host's indices are distinct, from 0 to 1023; a detecting agent numbers its schedulable devices in the order
/// `nvidia-smi` lists them (whole GPUs and, in place of a GPU in MIG mode, its MIG devices), so an index is not
/// necessarily `nvidia-smi`'s GPU index. Jobs see their devices by UUID (`GPU-…` or `MIG-…`).
public struct GPU: Sendable, Hashable, Codable {
    public var index: Int
    public var uuid: String
    /// The model as `nvidia-smi` names it; for a MIG device, the parent's name and the profile
    /// (`NVIDIA A100-SXM4-80GB MIG 3g.40gb`), so a job can ask for a profile with `gpu_model`.
    public var model: String
    public var memoryBytes: Int64
    /// The MIG profile (`3g.40gb`) when this is a MIG device; `nil` for a whole GPU.
    public var mig: String?
    /// The UUID of the GPU a MIG device belongs to; `nil` for a whole GPU.
    public var parentUuid: String?
    /// Whether MIG mode is on for the (parent) GPU: `true` for a MIG device, `false` for a whole GPU whose MIG mode
    /// is disabled, `nil` where MIG is not supported or not reported.
    public var migMode: Bool?

    public init(
        index: Int,
        uuid: String,
        model: String,
        memoryBytes: Int64,
        mig: String? = nil,
        parentUuid: String? = nil,
        migMode: Bool? = nil
    ) {
        self.index = index
        self.uuid = uuid
        self.model = model
        self.memoryBytes = memoryBytes
        self.mig = mig
        self.parentUuid = parentUuid
        self.migMode = migMode
    }
}

/// What a host offers to the pool.
public struct HostResources: Sendable, Hashable, Codable {
    public var cpuMillis: Int
    public var memoryBytes: Int64
    public var gpus: [GPU]
    /// How the host runs jobs (its runner and what enforces limits); `nil` from agents older than runners.
    public var runtime: HostRuntime?

    public init(cpuMillis: Int, memoryBytes: Int64, gpus: [GPU] = [], runtime: HostRuntime? = nil) {
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.gpus = gpus
        self.runtime = runtime
    }
}

/// The runner a host's agent runs every job with (chosen in the agent's configuration).
public enum RunnerKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// A plain child process, with cgroup limits where the host has them.
    case process
    /// Under bubblewrap: read-only system, private `/tmp` and work folder, no network unless allowed.
    case sandbox
    /// Submitted to a partner's Slurm partition with `sbatch`.
    case slurm
    /// In a `podman` container (jobs with `image:`).
    case container
}

/// What a host's agent reports about how it runs jobs.
public struct HostRuntime: Sendable, Hashable, Codable {
    /// The runner every job on this host goes through.
    public var runner: RunnerKind
    /// Runners this host could offer (found by the agent's probe), the configured one included.
    public var available: [RunnerKind]
    /// How limits are enforced: `"v2"` or `"v1"` (cgroups), or `nil` when the host has no usable cgroups.
    public var cgroups: String?
    /// Why something is unavailable, one line each (e.g. "cgroups: no writable cgroup v2 hierarchy").
    public var notes: [String]

    public init(runner: RunnerKind, available: [RunnerKind] = [], cgroups: String? = nil, notes: [String] = []) {
        self.runner = runner
        self.available = available
        self.cgroups = cgroups
        self.notes = notes
    }
}
