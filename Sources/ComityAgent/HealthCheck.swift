import AsyncHTTPClient
import ComityCore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How a service replica's health is checked (``ServiceSpec``): an HTTP path, a command, or a TCP connection.
package enum HealthCheck: Sendable, Hashable {
    /// `GET http://127.0.0.1:PORT<path>` answering 2xx.
    case http(path: String)
    /// The command exiting 0, run with the replica's environment in its work folder.
    case command([String])
    /// The port accepting a TCP connection (a spec with neither a path nor a command).
    case tcp

    /// The check a spec asks for: its `healthPath` (a missing leading `/` is added), else its `healthCommand`, else
    /// a TCP connection.
    package init(_ spec: ServiceSpec) {
        if let path = spec.healthPath, !path.isEmpty {
            self = .http(path: path.hasPrefix("/") ? path : "/" + path)
        } else if let command = spec.healthCommand, !command.isEmpty {
            self = .command(command)
        } else {
            self = .tcp
        }
    }

    /// Most bytes of a failing health command's output kept in its message.
    static let messageBytes = 300

    /// Runs the check once against a replica listening on `port`.
    ///
    /// - Returns: `nil` when healthy, otherwise why not (what the status's `message` says).
    package func failure(
        port: UInt16,
        environment: [String: String],
        workDirectory: String,
        timeout: Duration,
        http: HTTPClient
    ) async -> String? {
        switch self {
        case .http(let path):
            return await Self.httpFailure(url: "http://127.0.0.1:\(port)\(path)", timeout: timeout, http: http)
        case .command(let command):
            return await Self.commandFailure(
                command,
                environment: environment,
                workDirectory: workDirectory,
                timeout: timeout
            )
        case .tcp:
            return await ServicePort.connectionFailure(port: port, timeout: timeout)
        }
    }

    private static func httpFailure(url: String, timeout: Duration, http: HTTPClient) async -> String? {
        let request = HTTPClientRequest(url: url)
        do {
            let response = try await http.execute(request, timeout: .nanoseconds(Int64(timeout.nanoseconds)))
            // Read (a bounded part of) the body so the connection is left clean.
            _ = try? await response.body.collect(upTo: 64 * 1024)
            let code = response.status.code
            return (200..<300).contains(code) ? nil : "GET \(url) answered \(code)"
        } catch {
            return "GET \(url) failed: \(error)"
        }
    }

    private static func commandFailure(
        _ command: [String],
        environment: [String: String],
        workDirectory: String,
        timeout: Duration
    ) async -> String? {
        guard let program = command.first, !program.isEmpty else { return "empty health command" }
        let executable: Executable =
            if program.hasPrefix("/") {
                .path(FilePath(program))
            } else if program.contains("/") {
                .path(FilePath(workDirectory + "/" + program))
            } else {
                .name(program)
            }
        var variables: [Environment.Key: String] = [:]
        for (name, value) in environment { variables[Environment.Key(stringLiteral: name)] = value }
        var options = PlatformOptions()
        options.processGroupID = 0
        do {
            let result = try await Subprocess.run(
                executable,
                arguments: Arguments(Array(command.dropFirst())),
                environment: .custom(variables),
                workingDirectory: FilePath(workDirectory),
                platformOptions: options,
                input: .none,
                output: .sequence,
                error: .combinedWithOutput
            ) { execution -> (output: [UInt8], timedOut: Bool) in
                let pgid = execution.processIdentifier.value
                let outcome = await withTaskGroup(of: Bool?.self) { group in
                    group.addTask {
                        // Kills the whole group when the check takes too long; its pipes then close.
                        do { try await Task.sleep(for: timeout) } catch { return nil }
                        ProcessGroup.signal(pgid, SIGKILL)
                        return true
                    }
                    var tail: [UInt8] = []
                    do {
                        for try await buffer in execution.standardOutput {
                            tail.append(contentsOf: buffer.withUnsafeBytes { Array($0) })
                            if tail.count > 4 * messageBytes { tail.removeFirst(tail.count - messageBytes) }
                        }
                    } catch {}
                    await ProcessGroup.waitForExit(of: pgid)
                    group.cancelAll()
                    var timedOut = false
                    for await fired in group where fired == true { timedOut = true }
                    return (tail, timedOut)
                }
                // Whatever the command left behind in its group goes with it.
                ProcessGroup.signal(pgid, SIGKILL)
                return outcome
            }
            let output = String(decoding: result.closureResult.output.suffix(messageBytes), as: UTF8.self)
                .trimming(" \n\r\t")
            let detail = output.isEmpty ? "" : ": \(output)"
            if result.closureResult.timedOut { return "health command timed out after \(timeout)\(detail)" }
            switch result.terminationStatus {
            case .exited(0): return nil
            case .exited(let code): return "health command exited with \(code)\(detail)"
            case .signaled(let signal): return "health command killed by signal \(signal)\(detail)"
            }
        } catch let error as SubprocessError where error.code == .executableNotFound {
            return "health command not found: \(program)"
        } catch {
            return "health command failed to start: \(error)"
        }
    }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating at `Int64.max`).
    fileprivate var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : scaled + attoseconds / 1_000_000_000
    }
}
