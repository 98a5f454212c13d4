import ComityAPI
import ComityClient
import ComityCore
import Synchronization
import Testing

/// The agent's reporter: starts and ends that happen while a report is on its way go out together in the next one.
@Suite("Attempt reports sent together")
struct AttemptReporterTests {
    @Test("reports made while one is in flight share the next request; each caller gets its own answer or error")
    func coalesces() async throws {
        let sent = Mutex<[AttemptReports]>([])
        let (gate, open) = AsyncStream.makeStream(of: Void.self)
        let holdFirst = Mutex(true)
        // Stands in for the server's answers: attempts below 100 exist; an end succeeds with exit 0, fails otherwise.
        let reporter = AttemptReporter { reports in
            sent.withLock { $0.append(reports) }
            if holdFirst.withLock({ held in defer { held = false }; return held }) {
                for await _ in gate { break }
            }
            func answer(_ attempt: Int64, _ state: AttemptState, current: Bool) -> AttemptReportResult {
                attempt < 100 ? AttemptReportResult(attempt: attempt, ack: AttemptAck(current: current, state: state)) : AttemptReportResult(attempt: attempt, error: "not_found")
            }
            return AttemptReportResults(
                starts: reports.starts.map { answer($0, .running, current: true) },
                ends: reports.ends.map { answer($0.attempt, $0.exitCode == 0 ? .succeeded : .failed, current: false) })
        }
        async let first = reporter.start(attempt: 1)
        let deadline = ContinuousClock.now + .seconds(30)
        while sent.withLock({ $0.isEmpty }), ContinuousClock.now < deadline { await Task.yield() }
        // While the first is held: three starts (one unknown) and two ends.
        let results = try await withThrowingTaskGroup(of: (String, Result<AttemptAck, ClientError>).self) { group in
            for attempt: Int64 in [2, 3, 404] {
                group.addTask {
                    do { return ("start \(attempt)", .success(try await reporter.start(attempt: attempt))) } catch let error as ClientError {
                        return ("start \(attempt)", .failure(error))
                    }
                }
            }
            for (attempt, code): (Int64, Int32) in [(5, 0), (6, 2)] {
                group.addTask { ("end \(attempt)", .success(try await reporter.finish(attempt: attempt, FinishRequest(outcome: .exited, exitCode: code)))) }
            }
            // Let the first request go once all five wait behind it (the reporter itself never waits).
            while reporter.waiting < 5, ContinuousClock.now < deadline { await Task.yield() }
            #expect(reporter.waiting == 5)
            open.yield()
            return try await group.reduce(into: [String: Result<AttemptAck, ClientError>]()) { $0[$1.0] = $1.1 }
        }
        #expect(try await first.state == .running)
        #expect(try results["start 2"]?.get().state == .running)
        #expect(try results["start 3"]?.get().current == true)
        var status: Int?
        if case .failure(let error)? = results["start 404"] { status = error.status }
        #expect(status == 404, "a start of an attempt the host does not have must fail with 404")
        #expect(try results["end 5"]?.get().state == .succeeded)
        #expect(try results["end 6"]?.get().state == .failed)
        let requests = sent.withLock { $0 }
        #expect(requests.first?.starts == [1])
        // The five went out together, starts and ends in the order they were made within their kind.
        #expect(requests.count == 2)
        #expect(Set(requests.last?.starts ?? []) == [2, 3, 404])
        #expect(requests.last?.ends.map(\.attempt).sorted() == [5, 6])
    }
}
