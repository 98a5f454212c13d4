import ComityAPI
import ComityCore
import Foundation

extension AttemptUsage {
    /// The GPU usage as `comity job ID` shows it: a heading and one table row per GPU.
    func lines(attempt: Int64?) -> [String] {
        let interval = sampleIntervalSeconds.rounded() == sampleIntervalSeconds
            ? "\(Int64(sampleIntervalSeconds))s" : String(format: "%.1fs", sampleIntervalSeconds)
        var heading = "GPU usage"
        if let attempt { heading += " of attempt \(attempt)" }
        heading += " (sampled every \(interval)):"
        var table = Table("GPU", "SAMPLES", "JOB MEMORY (MAX)", "DEVICE MEMORY (MAX)", "UTILIZATION (MEAN/MAX)")
        for gpu in gpus {
            let utilization: String
            if let mean = gpu.meanUtilizationPercent, let max = gpu.maxUtilizationPercent {
                utilization = String(format: "%.0f%%/%d%%", mean, max)
            } else {
                utilization = "-"
            }
            table.append(
                gpu.uuid,
                String(gpu.samples),
                Quantity.formatBytes(gpu.maxMemoryBytes),
                gpu.maxDeviceMemoryBytes.map(Quantity.formatBytes) ?? "-",
                utilization
            )
        }
        return [heading] + table.render().map { "  " + $0 }
    }
}
