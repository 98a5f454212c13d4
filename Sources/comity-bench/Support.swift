import AsyncHTTPClient
import ComityClient
import ComityCore
import Foundation
import Logging
import NIOCore

/// Monotonic nanoseconds (CLOCK_MONOTONIC), the one clock every measurement uses.
enum Ticks {
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// When the process started (first use), for progress lines.
    static let started = now()

    static func seconds(from start: UInt64, to end: UInt64) -> Double { end >= start ? Double(end - start) / 1e9 : 0 }

    /// Milliseconds from `start` to `end`; negative when `end` came first.
    static func signedMilliseconds(from start: UInt64, to end: UInt64) -> Double {
        end >= start ? Double(end - start) / 1e6 : -Double(start - end) / 1e6
    }
}

/// Progress lines go to standard error, so standard output (or `--out`) holds only the results.
func say(_ text: String) {
    let elapsed = Ticks.seconds(from: Ticks.started, to: Ticks.now())
    FileHandle.standardError.write(Data("[bench +\(String(format: "%.1f", elapsed))s] \(text)\n".utf8))
}

/// Results of one subcommand: a flat JSON object (numbers, strings, nested objects).
struct Results {
    var values: [String: JSONValue] = [:]
    var notes: [String] = []

    subscript(key: String) -> JSONValue? {
        get { values[key] }
        set { values[key] = newValue }
    }

    mutating func set(_ key: String, _ value: Double, digits: Int = 1) {
        let scale = pow(10.0, Double(digits))
        values[key] = .number((value * scale).rounded() / scale)
    }

    mutating func set(_ key: String, _ value: Int) { values[key] = .number(Double(value)) }

    mutating func set(_ key: String, _ value: String) { values[key] = .string(value) }

    mutating func set(_ key: String, _ value: Bool) { values[key] = .bool(value) }

    mutating func note(_ text: String) {
        notes.append(text)
        say("NOTE: \(text)")
    }

    func encoded() throws -> Data {
        var all = values
        if !notes.isEmpty { all["notes"] = .array(notes.map(JSONValue.string)) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return try encoder.encode(JSONValue.object(all))
    }

    /// Writes the results to `path`, or to standard output when `path` is nil.
    func write(to path: String?) throws {
        let data = try encoded()
        if let path {
            try data.write(to: URL(fileURLWithPath: path))
        } else {
            FileHandle.standardOutput.write(data)
            FileHandle.standardOutput.write(Data("\n".utf8))
        }
    }
}

/// Percentiles by the nearest-rank method over a sample.
struct Percentiles {
    let sorted: [Double]

    init(_ values: [Double]) { sorted = values.sorted() }

    func at(_ p: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return sorted[Swift.min(Swift.max(rank, 1), sorted.count) - 1]
    }

    var max: Double { sorted.last ?? .nan }
    var median: Double { at(50) }
}

/// One HTTP client for the whole driver: a pool big enough that a thousand long-polls do not queue.
func makeHTTPClient() -> HTTPClient {
    var configuration = HTTPClient.Configuration()
    configuration.connectionPool = .init(idleTimeout: .seconds(120), concurrentHTTP1ConnectionsPerHostSoftLimit: 3_000)
    configuration.timeout = .init(connect: .seconds(15))
    return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
}

/// Runs `body` with an HTTP client that is shut down afterwards, also when `body` throws.
func withHTTPClient<T>(_ body: (HTTPClient) async throws -> T) async throws -> T {
    let http = makeHTTPClient()
    do {
        let value = try await body(http)
        try? await http.shutdown()
        return value
    } catch {
        try? await http.shutdown()
        throw error
    }
}

/// Runs `body`, treating "exists already" (409) as success so that setup can be repeated against one server.
func ignoringConflict(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ClientError where error.status == 409 {
    }
}

/// Runs `body` up to `attempts` times while it fails with a transport error or a 5xx answer.
func retrying<T>(attempts: Int = 8, _ body: () async throws -> T) async throws -> T {
    var delay = Duration.milliseconds(50)
    for attempt in 1... {
        do {
            return try await body()
        } catch let error as ClientError where (error.status == 0 || error.status >= 500) && attempt < attempts && !Task.isCancelled {
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(2))
        }
    }
    fatalError("unreachable")
}

/// Reads `VmRSS` (or another field) of a process from /proc, in MiB; nil when the process is gone.
func procStatusMiB(pid: Int32, field: String = "VmRSS") -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        if parts.count >= 2, let kib = Double(parts[1]) { return kib / 1024 }
    }
    return nil
}

/// A comma-separated list of whole numbers (`1000,10000`).
func parseIntegerList(_ text: String, option: String) throws -> [Int] {
    let values = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.map { Int($0.replacingOccurrences(of: "_", with: "")) }
    guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else {
        throw BenchError("\(option): expected a comma-separated list of positive whole numbers, got \"\(text)\"")
    }
    return values.map { $0! }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Logging for the driver: warnings and worse only, so that hot loops never format log lines.
enum BenchLogging {
    static let bootstrap: Void = {
        _ = Ticks.started
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
    }()

    static func logger(_ label: String) -> Logger {
        _ = bootstrap
        var logger = Logger(label: label)
        logger.logLevel = .warning
        return logger
    }
}
