import AsyncHTTPClient
import ComityCore
import Foundation
import NIOCore
import NIOHTTP1

/// CPU time of the parts of the system during a phase: this driver, comity-server, PostgreSQL (the postmaster and
/// its children), and the whole machine (what is left is other load on the machine).
struct CPUSample {
    var wall: UInt64
    var driver: Double
    var server: Double?
    var postgres: Double?
    var machineBusy: Double
    var machineTotal: Double

    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    static func take(serverPID: Int32?, postmasterPID: Int32?) -> CPUSample {
        let driver = process(getpid())?.cpu ?? 0
        let (busy, total) = machine()
        return CPUSample(
            wall: Ticks.now(), driver: driver, server: serverPID.flatMap { process($0)?.cpu },
            postgres: postmasterPID.map(postgresCPU), machineBusy: busy, machineTotal: total)
    }

    /// (ppid, CPU seconds) of a process from /proc/PID/stat.
    static func process(_ pid: Int32) -> (ppid: Int32, cpu: Double)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        guard fields.count > 12, let ppid = Int32(fields[1]), let utime = Double(fields[11]), let stime = Double(fields[12]) else {
            return nil
        }
        return (ppid, (utime + stime) / ticksPerSecond)
    }

    /// The postmaster and every live child (backends, checkpointer, WAL writer…). Backends that exited during the
    /// phase are not counted.
    static func postgresCPU(_ postmaster: Int32) -> Double {
        var sum = process(postmaster)?.cpu ?? 0
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return sum }
        for entry in entries {
            guard let pid = Int32(entry), pid != postmaster, let info = process(pid), info.ppid == postmaster else { continue }
            sum += info.cpu
        }
        return sum
    }

    /// Busy and total CPU seconds of the whole machine (all cores) from /proc/stat.
    static func machine() -> (busy: Double, total: Double) {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8), let line = text.split(separator: "\n").first
        else { return (0, 0) }
        let values = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard values.count >= 8 else { return (0, 0) }
        // user nice system idle iowait irq softirq steal
        let busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
        let total = busy + values[3] + values[4]
        return (busy / ticksPerSecond, total / ticksPerSecond)
    }

    /// What the phase between `start` and `end` cost, as a JSON object of CPU seconds.
    static func report(from start: CPUSample, to end: CPUSample) -> JSONValue {
        let wall = Ticks.seconds(from: start.wall, to: end.wall)
        var object: [String: JSONValue] = [
            "wall_s": .number(round1(wall)),
            "driver_cpu_s": .number(round1(end.driver - start.driver)),
            "machine_busy_cpu_s": .number(round1(end.machineBusy - start.machineBusy)),
            "machine_cpu_capacity_s": .number(round1(end.machineTotal - start.machineTotal)),
        ]
        var ours = end.driver - start.driver
        if let a = start.server, let b = end.server {
            object["server_cpu_s"] = .number(round1(b - a))
            ours += b - a
        }
        if let a = start.postgres, let b = end.postgres {
            object["postgres_cpu_s"] = .number(round1(b - a))
            ours += b - a
        }
        object["other_cpu_s"] = .number(round1(max(0, (end.machineBusy - start.machineBusy) - ours)))
        return .object(object)
    }
}

/// The server's own account of a phase, from `/metrics` before and after: scheduling passes, placements, and
/// requests per route.
struct MetricsSnapshot {
    var series: [String: Double]

    static func take(server: String, http: HTTPClient) async -> MetricsSnapshot? {
        var request = HTTPClientRequest(url: server + "/metrics")
        request.method = .GET
        guard let response = try? await http.execute(request, timeout: .seconds(10)), response.status == .ok,
            let body = try? await response.body.collect(upTo: 16 << 20)
        else { return nil }
        var series: [String: Double] = [:]
        for line in String(buffer: body).split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            series[String(line[..<space])] = value
        }
        return MetricsSnapshot(series: series)
    }

    static func label(_ name: String, in key: String) -> String? {
        guard let range = key.range(of: "\(name)=\"") else { return nil }
        let rest = key[range.upperBound...]
        return rest.firstIndex(of: "\"").map { String(rest[..<$0]) }
    }

    /// Passes, pass seconds, placements, and per route the request count and mean time.
    static func report(from start: MetricsSnapshot, to end: MetricsSnapshot) -> JSONValue {
        func delta(_ key: String) -> Double { (end.series[key] ?? 0) - (start.series[key] ?? 0) }
        let passes = delta("comity_scheduler_pass_seconds_count")
        let passSeconds = delta("comity_scheduler_pass_seconds_sum")
        var routes: [String: (count: Double, seconds: Double)] = [:]
        for key in end.series.keys where key.hasPrefix("http_server_request_duration_count{") {
            guard let route = label("http_route", in: key) else { continue }
            let sumKey = key.replacingOccurrences(of: "http_server_request_duration_count{", with: "http_server_request_duration_sum{")
            routes[route, default: (0, 0)].count += delta(key)
            routes[route, default: (0, 0)].seconds += delta(sumKey)
        }
        var routeObject: [String: JSONValue] = [:]
        for (route, value) in routes where value.count > 0 {
            routeObject[route] = .object([
                "count": .number(value.count), "mean_ms": .number(round1(value.seconds / value.count * 1000)),
                "total_s": .number(round1(value.seconds)),
            ])
        }
        // Per step of a pass: the mean milliseconds (comity_scheduler_pass_part_seconds{part=...}).
        var parts: [String: JSONValue] = [:]
        for key in end.series.keys where key.hasPrefix("comity_scheduler_pass_part_seconds_count{") {
            guard let part = label("part", in: key) else { continue }
            let count = delta(key)
            let sum = delta(key.replacingOccurrences(of: "_seconds_count{", with: "_seconds_sum{"))
            if count > 0 { parts[part] = .number((sum / count * 1000 * 100).rounded() / 100) }
        }
        return .object([
            "pass_parts_mean_ms": .object(parts),
            "passes": .number(passes),
            "pass_seconds": .number(round1(passSeconds)),
            "pass_mean_ms": .number(passes > 0 ? round1(passSeconds / passes * 1000) : 0),
            "placements": .number(delta("comity_placements_total")),
            "routes": .object(routeObject),
        ])
    }
}

/// Measures one phase: CPU of every part and the server's metrics, stored under `<phase>_cpu` and `<phase>_server`.
struct PhaseAccounting {
    var cpu: CPUSample
    var metrics: MetricsSnapshot?
    let serverPID: Int32?
    let postmasterPID: Int32?

    static func begin(server: String, http: HTTPClient, serverPID: Int32?, postmasterPID: Int32?) async -> PhaseAccounting {
        let metrics = await MetricsSnapshot.take(server: server, http: http)
        return PhaseAccounting(
            cpu: CPUSample.take(serverPID: serverPID, postmasterPID: postmasterPID), metrics: metrics, serverPID: serverPID,
            postmasterPID: postmasterPID)
    }

    func end(_ phase: String, server: String, http: HTTPClient, into results: inout Results) async {
        let cpuEnd = CPUSample.take(serverPID: serverPID, postmasterPID: postmasterPID)
        results["\(phase)_cpu"] = CPUSample.report(from: cpu, to: cpuEnd)
        if let metrics, let after = await MetricsSnapshot.take(server: server, http: http) {
            results["\(phase)_server"] = MetricsSnapshot.report(from: metrics, to: after)
        }
    }
}

/// PostgreSQL's processes, seen through /proc.
enum PostgresProcesses {
    /// Children of `postmaster` that are autovacuum workers now.
    static func autovacuumWorkers(postmaster: Int32) -> Int {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return 0 }
        var count = 0
        for entry in entries {
            guard let pid = Int32(entry), pid != postmaster, let info = CPUSample.process(pid), info.ppid == postmaster,
                let command = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)
            else { continue }
            if command.hasPrefix("postgres: autovacuum worker") { count += 1 }
        }
        return count
    }

    /// Returns once no autovacuum worker has run for 12 s in a row (or after `timeout`); the seconds waited. 12 s is
    /// longer than the naptime the bench runs PostgreSQL with (10 s): a table that needed vacuuming would have had a
    /// worker started within it.
    static func waitUntilNoAutovacuum(postmaster: Int32, timeout: Duration) async throws -> Double {
        let start = Ticks.now()
        let limit = UInt64(timeout.components.seconds) * 1_000_000_000
        var quietSince: UInt64?
        while Ticks.now() - start < limit {
            let now = Ticks.now()
            if autovacuumWorkers(postmaster: postmaster) > 0 {
                quietSince = nil
            } else if let since = quietSince {
                if now - since >= 12_000_000_000 { break }
            } else {
                quietSince = now
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return Ticks.seconds(from: start, to: Ticks.now())
    }
}
