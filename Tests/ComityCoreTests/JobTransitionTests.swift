import ComityCore
import Testing

extension JobEvent: CustomTestStringConvertible {
    public var testDescription: String {
        switch self {
        case .assigned: "assigned"
        case .started: "started"
        case .exited(let code): "exited(\(code))"
        case .errored: "errored"
        case .cancelled: "cancelled"
        case .attemptLost: "attemptLost"
        }
    }
}

@Suite("JobTransition")
struct JobTransitionTests {
    static let allEvents: [JobEvent] = [
        .assigned, .started, .exited(code: 0), .exited(code: 1), .exited(code: -9), .exited(code: 137), .errored,
        .cancelled, .attemptLost,
    ]

    /// The whole table, written out independently of the implementation. `attemptsUsed` counts the attempt in
    /// progress, so a job with `retries` retries may use `retries + 1` attempts.
    static func expected(_ state: JobState, _ event: JobEvent, retriesLeft: Bool) -> JobState? {
        switch state {
        case .queued:
            switch event {
            case .assigned: return .assigned
            case .cancelled: return .cancelled
            default: return nil
            }
        case .assigned, .running:
            switch event {
            case .started: return state == .assigned ? .running : nil
            case .assigned: return nil
            case .exited(let code): return code == 0 ? .succeeded : .failed
            case .errored, .attemptLost: return retriesLeft ? .queued : .failed
            case .cancelled: return .cancelled
            }
        case .succeeded, .failed, .cancelled:
            return nil
        }
    }

    /// (attemptsUsed, retries, whether another attempt may start).
    static let budgets: [(Int, Int, Bool)] = [
        (1, 0, false), (1, 1, true), (2, 1, false), (1, 2, true), (2, 2, true), (3, 2, false), (21, 20, false),
        (20, 20, true),
    ]

    @Test("every state × event × retry budget", arguments: JobState.allCases, allEvents)
    func table(state: JobState, event: JobEvent) {
        for (used, retries, left) in Self.budgets {
            let transition = JobTransition(state: state, attemptsUsed: used, retries: retries)
            #expect(transition.hasRetriesLeft == left, "used \(used) of \(retries) retries")
            #expect(
                transition.next(on: event) == Self.expected(state, event, retriesLeft: left),
                "\(state) on \(event.testDescription), used \(used), retries \(retries)"
            )
        }
    }

    @Test("terminal states never change", arguments: JobState.allCases.filter(\.isTerminal), allEvents)
    func terminal(state: JobState, event: JobEvent) {
        for used in 0...3 {
            for retries in 0...3 {
                #expect(JobTransition(state: state, attemptsUsed: used, retries: retries).next(on: event) == nil)
            }
        }
    }

    @Test("isTerminal and holdsHost")
    func stateProperties() {
        #expect(JobState.allCases.filter(\.isTerminal) == [.succeeded, .failed, .cancelled])
        #expect(JobState.allCases.filter(\.holdsHost) == [.assigned, .running])
        #expect(AttemptState.allCases.filter { !$0.isTerminal } == [.assigned, .running])
        #expect(JobState.allCases.allSatisfy { !($0.isTerminal && $0.holdsHost) })
    }

    @Test(
        "scripted lives of a job",
        arguments: [
            (
                "happy path", 0, [JobEvent.assigned, .started, .exited(code: 0)],
                [JobState.assigned, .running, .succeeded]
            ),
            ("exit before start report", 0, [.assigned, .exited(code: 0)], [.assigned, .succeeded]),
            (
                "non-zero exit fails even with retries left", 5, [.assigned, .started, .exited(code: 3)],
                [.assigned, .running, .failed]
            ),
            ("killed by a signal", 5, [.assigned, .started, .exited(code: -9)], [.assigned, .running, .failed]),
            (
                "lost twice with 2 retries, then succeeds", 2,
                [.assigned, .started, .attemptLost, .assigned, .errored, .assigned, .started, .exited(code: 0)],
                [.assigned, .running, .queued, .assigned, .queued, .assigned, .running, .succeeded]
            ),
            (
                "lost three times with 2 retries fails", 2,
                [.assigned, .started, .attemptLost, .assigned, .attemptLost, .assigned, .started, .attemptLost],
                [.assigned, .running, .queued, .assigned, .queued, .assigned, .running, .failed]
            ),
            ("errored with no retries fails", 0, [.assigned, .errored], [.assigned, .failed]),
            ("cancel while queued", 0, [.cancelled], [.cancelled]),
            ("cancel while assigned", 0, [.assigned, .cancelled], [.assigned, .cancelled]),
            ("cancel while running", 3, [.assigned, .started, .cancelled], [.assigned, .running, .cancelled]),
        ] as [(String, Int, [JobEvent], [JobState])]
    )
    func scripted(label: String, retries: Int, events: [JobEvent], states: [JobState]) throws {
        var state = JobState.queued
        var attempts = 0
        var seen: [JobState] = []
        for event in events {
            if event == .assigned { attempts += 1 }
            let next = try #require(
                JobTransition(state: state, attemptsUsed: attempts, retries: retries).next(on: event),
                "\(label): \(state) on \(event.testDescription) was refused"
            )
            seen.append(next)
            state = next
        }
        #expect(seen == states, "\(label)")
    }

    @Test(
        "events that are not allowed are refused",
        arguments: [
            (JobState.queued, JobEvent.started), (.queued, .exited(code: 0)), (.queued, .errored),
            (.queued, .attemptLost),
            (.assigned, .assigned), (.running, .assigned), (.running, .started),
            (.succeeded, .cancelled), (.failed, .assigned), (.cancelled, .assigned), (.succeeded, .exited(code: 0)),
        ]
    )
    func refused(state: JobState, event: JobEvent) {
        #expect(JobTransition(state: state, attemptsUsed: 1, retries: 5).next(on: event) == nil)
    }
}
