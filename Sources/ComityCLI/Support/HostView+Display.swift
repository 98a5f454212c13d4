import ComityAPI
import ComityCore

extension HostView {
    /// Allocated over total CPUs, e.g. `6/64`.
    var cpuText: String { "\(Quantity.formatCPUs(allocatedCpuMillis))/\(Quantity.formatCPUs(resources.cpuMillis))" }

    /// Allocated over total memory, e.g. `48Gi/512Gi`.
    var memoryText: String {
        "\(Quantity.formatBytes(allocatedMemoryBytes))/\(Quantity.formatBytes(resources.memoryBytes))"
    }

    /// Allocated over total GPUs with their model, e.g. `2/8 H100 80GB HBM3`; `0` without GPUs.
    var gpuText: String {
        guard !resources.gpus.isEmpty else { return "0" }
        var models: [String] = []
        for gpu in resources.gpus where !models.contains(Self.shortModel(gpu.model)) {
            models.append(Self.shortModel(gpu.model))
        }
        return "\(allocatedGpus.count)/\(resources.gpus.count) " + models.joined(separator: "+")
    }

    /// The model without the vendor prefix that every row would repeat (`NVIDIA H100 80GB HBM3` → `H100 80GB HBM3`).
    static func shortModel(_ model: String) -> String {
        for prefix in ["NVIDIA ", "Nvidia "] where model.hasPrefix(prefix) {
            return String(model.dropFirst(prefix.count))
        }
        return model
    }
}
