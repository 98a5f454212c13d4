import ComityAPI
import Foundation
import Logging
import Testing

@testable import ComityAgent

/// A fresh folder under the system's temporary folder.
func makeTemporaryDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("comity-agent-tests-\(UUID().uuidString)")
        .path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

let quietLogger = Logger(label: "comity.agent.tests") { _ in SwiftLogNoOpLogHandler() }

@Suite("Agent state and configuration")
struct AgentStateTests {
    @Test("the credential is saved with mode 600 and read back")
    func credential() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let state = StateDirectory(path: directory + "/state")
        try state.prepare()
        let credential = Credential(
            server: "http://127.0.0.1:8700",
            enrollment: EnrollResponse(
                hostId: 3,
                hostName: "gpu-01",
                token: "secret-token",
                heartbeatSeconds: 5,
                leaseSeconds: 30
            ),
            enrolledAt: Date(timeIntervalSince1970: 1_800_000_000)
        )
        try credential.save(to: state.credentialPath)
        let attributes = try FileManager.default.attributesOfItem(atPath: state.credentialPath)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let stateAttributes = try FileManager.default.attributesOfItem(atPath: state.path)
        #expect((stateAttributes[.posixPermissions] as? NSNumber)?.intValue == 0o700)
        #expect(try Credential.load(from: state.credentialPath) == credential)
        #expect(!credential.description.contains("secret-token"))
        #expect(try Credential.load(from: directory + "/none.json") == nil)
    }

    @Test("a corrupt credential is an error, not a silent re-enrollment")
    func corruptCredential() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/credential.json"
        try Data("{".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: AgentError.self) { try Credential.load(from: path) }
    }

    @Test("without credential and join token the agent says what to do")
    func noCredential() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let agent = AgentService(
            configuration: AgentConfiguration(server: "http://127.0.0.1:1", joinToken: nil, stateDirectory: directory),
            logger: quietLogger
        )
        await #expect {
            try await agent.setUp()
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .configuration && error.message.contains("--join-token")
        }
    }

    @Test("old work folders are pruned, running ones kept")
    func pruning() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let state = StateDirectory(path: directory)
        try state.prepare()
        for attempt in 1...9 { _ = try state.makeWorkDirectory(attempt: Int64(attempt)) }
        state.pruneWorkDirectories(keeping: [2])
        let left = try FileManager.default.contentsOfDirectory(atPath: state.workPath).compactMap(Int64.init).sorted()
        #expect(left == [2, 5, 6, 7, 8, 9])
    }

    @Test("labels and kill grace flags")
    func flags() throws {
        #expect(
            try AgentConfiguration.parseLabels("tre=true, disk=encrypted,zone=") == [
                "tre": "true", "disk": "encrypted", "zone": "",
            ]
        )
        #expect(throws: AgentError.self) { try AgentConfiguration.parseLabels("tre") }
        #expect(throws: AgentError.self) { try AgentConfiguration.parseLabels("a=1,a=2") }
        #expect(try AgentConfiguration.parseGrace("10s") == .seconds(10))
        #expect(try AgentConfiguration.parseGrace("1m30s") == .seconds(90))
        #expect(try AgentConfiguration.parseGrace("500ms") == .milliseconds(500))
        #expect(try AgentConfiguration.parseGrace("0") == .zero)
        #expect(throws: AgentError.self) { try AgentConfiguration.parseGrace("soon") }
        #expect(throws: AgentError.self) {
            try AgentConfiguration(server: "localhost:8700", joinToken: nil, stateDirectory: "/tmp/x").validate()
        }
    }

    @Test("backoff grows to its cap")
    func backoff() {
        var backoff = Backoff(initial: .milliseconds(100), cap: .seconds(5))
        let delays = (0..<12).map { _ in backoff.next() }
        #expect(delays.allSatisfy { $0 <= .seconds(5) && $0 >= .milliseconds(50) })
        #expect(delays.last! >= .milliseconds(2500))
        backoff.reset()
        #expect(backoff.next() <= .milliseconds(100))
    }
}
