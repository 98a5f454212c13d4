import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// TCP ports for service replicas: picking a free one, checking it is still free, and probing a listener.
///
/// A port handed to a replica stays reserved in this process until it is released, so two replicas on one agent
/// never get the same port even while one of them has not bound it yet.
package enum ServicePort {
    package struct Error: Swift.Error, Sendable, CustomStringConvertible {
        package var description: String
    }

    /// Ports handed to replicas of this process and not released yet.
    private static let reserved = Mutex<Set<UInt16>>([])

    /// Picks a free TCP port (bind to port 0 on all IPv4 addresses, read the port the kernel chose, close) and
    /// reserves it; a port already reserved here is a clash and another is picked.
    ///
    /// - Throws: ``Error`` when no socket can be bound, or every try clashed.
    package static func reserve() throws(Error) -> UInt16 {
        var lastError = "no port found"
        for _ in 0..<32 {
            let port: UInt16
            switch bindAndRead(port: 0) {
            case .success(let chosen): port = chosen
            case .failure(let error):
                lastError = error.description
                continue
            }
            let isNew = reserved.withLock { $0.insert(port).inserted }
            if isNew { return port }
            lastError = "port \(port) is already given to another replica"
        }
        throw Error(description: "cannot find a free TCP port: \(lastError)")
    }

    /// Returns `port` to the pool.
    package static func release(_ port: UInt16) {
        _ = reserved.withLock { $0.remove(port) }
    }

    /// Whether nothing listens on `port` now (a bind with `SO_REUSEADDR` succeeds, so connections left in
    /// `TIME_WAIT` by a previous process do not count).
    package static func isFree(_ port: UInt16) -> Bool {
        if case .success = bindAndRead(port: port) { return true }
        return false
    }

    /// Binds a TCP socket to `0.0.0.0:port`, reads the bound port, and closes the socket.
    private static func bindAndRead(port: UInt16) -> Result<UInt16, Error> {
        let fd = socket(AF_INET, streamSocketType, 0)
        guard fd >= 0 else { return .failure(Error(description: "socket: \(lastErrno())")) }
        defer { close(fd) }
        var yes: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = 0  // INADDR_ANY
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { return .failure(Error(description: "bind to port \(port): \(lastErrno())")) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return .failure(Error(description: "getsockname: \(lastErrno())")) }
        return .success(UInt16(bigEndian: address.sin_port))
    }

    /// Tries a TCP connection to `127.0.0.1:port`; `nil` when it was accepted, otherwise why not.
    ///
    /// The connect is non-blocking and polled every 20 ms until `timeout`, so a cooperative thread is never held.
    package static func connectionFailure(port: UInt16, timeout: Duration) async -> String? {
        let fd = socket(AF_INET, streamSocketType, 0)
        guard fd >= 0 else { return "socket: \(lastErrno())" }
        defer { close(fd) }
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if result == 0 { return nil }
        guard errno == EINPROGRESS else { return "connect to port \(port): \(lastErrno())" }
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&descriptor, 1, 0)
            if ready > 0 {
                var error: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 else {
                    return "connect to port \(port): \(lastErrno())"
                }
                return error == 0 ? nil : "connect to port \(port): \(String(cString: strerror(error)))"
            }
            if ready < 0, errno != EINTR { return "connect to port \(port): \(lastErrno())" }
            if ContinuousClock.now >= deadline { return "connect to port \(port): timed out after \(timeout)" }
            do { try await Task.sleep(for: .milliseconds(20)) } catch { return "cancelled" }
        }
    }

    #if canImport(Glibc) || canImport(Musl)
    private static let streamSocketType = Int32(SOCK_STREAM.rawValue)
    #else
    private static let streamSocketType = SOCK_STREAM
    #endif

    private static func lastErrno() -> String { String(cString: strerror(errno)) }
}
