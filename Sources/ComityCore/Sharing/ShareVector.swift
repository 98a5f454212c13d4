import Foundation

/// An amount of each resource kind fair sharing weighs: weighted GPUs, CPU cores and memory in GiB (or those
/// multiplied by seconds, for contribution and usage).
public struct ShareVector: Sendable, Hashable, Codable {
    public var gpu: Double
    public var cpu: Double
    public var memory: Double

    public static let zero = ShareVector(gpu: 0, cpu: 0, memory: 0)

    public init(gpu: Double, cpu: Double, memory: Double) {
        self.gpu = gpu
        self.cpu = cpu
        self.memory = memory
    }

    /// What a request (or an attempt) holds: `weightedGPUs` is the sum of the weights of its GPUs' models.
    public init(cpuMillis: Int, memoryBytes: Int64, weightedGPUs: Double) {
        self.init(gpu: weightedGPUs, cpu: Double(cpuMillis) / 1000, memory: Double(memoryBytes) / Double(1 << 30))
    }

    public static let kinds: [ResourceKind] = ResourceKind.allCases

    public subscript(kind: ResourceKind) -> Double {
        get {
            switch kind {
            case .gpu: gpu
            case .cpu: cpu
            case .memory: memory
            }
        }
        set {
            switch kind {
            case .gpu: gpu = newValue
            case .cpu: cpu = newValue
            case .memory: memory = newValue
            }
        }
    }

    public static func + (a: ShareVector, b: ShareVector) -> ShareVector {
        ShareVector(gpu: a.gpu + b.gpu, cpu: a.cpu + b.cpu, memory: a.memory + b.memory)
    }

    public static func - (a: ShareVector, b: ShareVector) -> ShareVector {
        ShareVector(gpu: a.gpu - b.gpu, cpu: a.cpu - b.cpu, memory: a.memory - b.memory)
    }

    public static func * (a: ShareVector, factor: Double) -> ShareVector {
        ShareVector(gpu: a.gpu * factor, cpu: a.cpu * factor, memory: a.memory * factor)
    }

    public static func += (a: inout ShareVector, b: ShareVector) { a = a + b }
    public static func -= (a: inout ShareVector, b: ShareVector) { a = a - b }

    /// Each kind divided by the same kind of `total` (0 where the total is 0): fractions of a pool.
    public func fraction(of total: ShareVector) -> ShareVector {
        ShareVector(
            gpu: total.gpu > 0 ? gpu / total.gpu : 0, cpu: total.cpu > 0 ? cpu / total.cpu : 0,
            memory: total.memory > 0 ? memory / total.memory : 0)
    }
}

/// A kind of resource that is shared and accounted separately.
public enum ResourceKind: String, Sendable, Hashable, Codable, CaseIterable {
    case gpu
    case cpu
    case memory
}

/// How much one GPU of a model counts for, against a plain GPU's 1 (an H100-hour is not an L4-hour). Admin data.
///
/// A weight applies to every GPU whose model contains its pattern, case-insensitively; the longest matching
/// pattern wins, and a GPU no pattern matches weighs 1. Patterns that differ only in case are one pattern (the
/// larger weight counts).
public struct GPUWeights: Sendable, Hashable {
    /// (lower-cased pattern, weight), longest pattern first.
    private let patterns: [(String, Double)]

    public init(_ weights: [String: Double] = [:]) {
        var lowered: [String: Double] = [:]
        for (pattern, weight) in weights { lowered[pattern.lowercased()] = max(lowered[pattern.lowercased()] ?? 0, weight) }
        patterns = lowered.map { ($0.key, $0.value) }.sorted { ($0.0.count, $0.0) > ($1.0.count, $1.0) }
    }

    public func weight(of model: String) -> Double {
        if patterns.isEmpty { return 1 }
        let lowered = model.lowercased()
        return patterns.first { lowered.contains($0.0) }?.1 ?? 1
    }

    /// The weighted GPU count of `gpus`.
    public func weighted(_ gpus: some Sequence<GPU>) -> Double {
        gpus.reduce(0) { $0 + weight(of: $1.model) }
    }

    /// The weighted count of the GPUs with these indices among a host's `gpus` (an index it does not list weighs 1).
    public func weighted(indices: some Sequence<Int>, of gpus: [GPU]) -> Double {
        indices.reduce(0) { total, index in total + (gpus.first { $0.index == index }.map { weight(of: $0.model) } ?? 1) }
    }

    public static func == (a: GPUWeights, b: GPUWeights) -> Bool {
        a.patterns.map(\.0) == b.patterns.map(\.0) && a.patterns.map(\.1) == b.patterns.map(\.1)
    }

    public func hash(into hasher: inout Hasher) {
        for (pattern, weight) in patterns {
            hasher.combine(pattern)
            hasher.combine(weight)
        }
    }
}

/// Exponential decay with a half-life: what was worth 1 `elapsed` seconds ago is worth `factor` now.
public enum Decay {
    public static func factor(elapsedSeconds: Double, halfLifeSeconds: Double) -> Double {
        guard halfLifeSeconds > 0 else { return elapsedSeconds > 0 ? 0 : 1 }
        return exp2(-max(0, elapsedSeconds) / halfLifeSeconds)
    }

    /// A decayed total `elapsed` seconds after it was last brought up to date, plus what was added since (counted
    /// as recent: accounting runs often compared to any sensible half-life).
    public static func advance(_ total: ShareVector, elapsedSeconds: Double, halfLifeSeconds: Double, adding: ShareVector) -> ShareVector {
        total * factor(elapsedSeconds: elapsedSeconds, halfLifeSeconds: halfLifeSeconds) + adding
    }
}
