import ComityAPI
import ComityCore
import Foundation

extension JobView {
    /// One progress line's text for the job's current state, e.g. `assigned to de-gpu (eu-de-1)`, `succeeded exit 0`.
    var progressText: String {
        switch state {
        case .queued:
            if attempts > 0 { return "queued again" + (reason.map { " (\($0))" } ?? "") }
            return "queued"
        case .assigned:
            return "assigned to \(placement ?? "a host")" + attemptSuffix
        case .running:
            return "running" + (host.map { " on \($0)" } ?? "") + attemptSuffix
                + (cancelRequested ? ", cancel requested" : "")
        case .succeeded, .failed, .cancelled:
            var text = state.rawValue
            if let exitCode { text += " exit \(exitCode)" }
            if let reason, state != .succeeded, reason != "exit \(exitCode.map(String.init) ?? "")" {
                text += ": \(reason)"
            }
            return text
        }
    }

    /// `host (region)`, or `nil` before the job was placed.
    var placement: String? {
        guard let host else { return nil }
        return region.map { "\(host) (\($0))" } ?? host
    }

    /// When the job's current state began, as far as the view tells.
    var stateSince: Date? {
        switch state {
        case .running: startedAt
        case .succeeded, .failed, .cancelled: finishedAt
        case .queued: attempts == 0 ? submittedAt : nil
        case .assigned: nil
        }
    }

    /// What distinguishes one observation of a job from another for progress output.
    var progressKey: String { "\(state.rawValue)|\(attempt.map(String.init) ?? "")|\(host ?? "")|\(cancelRequested)" }

    private var attemptSuffix: String { attempts > 1 ? " (attempt \(attempts))" : "" }
}

extension ResourceRequest {
    /// A short summary such as `8 CPUs, 64Gi memory, 2 GPUs (H100, 80Gi+ each)`.
    var summary: String {
        var parts = [
            "\(Quantity.formatCPUs(cpuMillis)) CPU\(cpuMillis == 1000 ? "" : "s")",
            "\(Quantity.formatBytes(memoryBytes)) memory",
        ]
        if gpus > 0 {
            var gpuText = "\(gpus) GPU\(gpus == 1 ? "" : "s")"
            let constraints = [gpuModel, gpuMemoryBytes.map { Quantity.formatBytes($0) + "+ each" }].compactMap(\.self)
            if !constraints.isEmpty { gpuText += " (\(constraints.joined(separator: ", ")))" }
            parts.append(gpuText)
        }
        return parts.joined(separator: ", ")
    }
}

extension Array where Element == String {
    /// The words of a command line, quoted where a shell would need it.
    var shellQuoted: String {
        map { word in
            let safe = !word.isEmpty && word.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:,@%+".contains($0) }
            return safe ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }
        .joined(separator: " ")
    }
}
