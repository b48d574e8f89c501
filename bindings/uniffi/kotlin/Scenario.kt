// A phone's session, from the generated Kotlin bindings of precall-ffi (JVM, JNA), over
// a real socket to a real precall-server; run by e2e/tests/phones.rs. The same
// scenario as bindings/uniffi/python/scenario.py, step for step:
//
// The terminal logs in with its capabilities, shows its table, places a fast-path call
// to the peer's terminal (a reference precall-client), answers one from it, survives a
// connection cut under it (by the harness) by resuming the session, sees the peer go offline and logs out.
// At every step the table the app keeps from the core's events must equal the core's
// own table (peers()), and each entry's parameters must equal negotiatePair of the two
// capability sets: the facade and the app hold no protocol rule.
//
// Lines on stdout: `step NAME: DETAIL`, `ready answer|call-me|drop|peer-offline` (the
// harness acts on the peer's side), `FAIL: WHY` (exit status 1), `done`.
//
//   java -Djna.library.path=target/uniffi/lib \
//     -cp target/uniffi/kotlin/scenario.jar:target/uniffi/kotlin/kotlin-stdlib.jar:/usr/share/java/jna.jar \
//     ScenarioKt --server 127.0.0.1:7700 --user alice --password-env PW \
//     --caps alice.json --peer bob --peer-caps bob.json [--fault drop-offline]

import java.io.File
import java.io.IOException
import java.net.InetSocketAddress
import java.net.Socket
import java.net.SocketTimeoutException
import kotlin.system.exitProcess
import uniffi.precall_ffi.*

const val WAIT_MS = 15_000L

class Fail(why: String) : Exception(why)

fun check(cond: Boolean, why: () -> String) {
    if (!cond) throw Fail(why())
}

fun nowMs(): ULong = (System.nanoTime() / 1_000_000).toULong()

fun describe(p: CallParams): String {
    fun way(d: Direction) = when (d) {
        is Direction.Video -> d.params.let { "${it.codec} ${it.width}x${it.height}@${it.fps} ${it.bitrateKbps}kbps" }
        is Direction.Off -> "no video (${d.reason})"
    }
    return "send ${way(p.send)}, receive ${way(p.recv)}"
}

/** What the app needs of the client: the generated class, or the seeded fault. */
interface Core {
    val client: PrecallClient
    fun pollEvent(): Event? = client.pollEvent()
}

class Plain(override val client: PrecallClient) : Core

/** The seeded fault: a client whose PeerOffline events are lost. */
class DroppingOffline(override val client: PrecallClient) : Core {
    override fun pollEvent(): Event? {
        while (true) {
            val ev = client.pollEvent()
            if (ev !is Event.PeerOffline) return ev
        }
    }
}

data class Args(
    val server: String, val user: String, val passwordEnv: String, val caps: String,
    val peer: String, val peerCaps: String, val fault: String?,
)

fun parseArgs(argv: Array<String>): Args {
    val m = mutableMapOf<String, String>()
    var i = 0
    while (i < argv.size) {
        val flag = argv[i]
        require(flag.startsWith("--") && i + 1 < argv.size) { "bad argument $flag" }
        m[flag.removePrefix("--")] = argv[i + 1]
        i += 2
    }
    fun need(k: String) = m[k] ?: throw IllegalArgumentException("--$k is required")
    val fault = m["fault"]
    require(fault == null || fault == "drop-offline") { "--fault drop-offline or nothing" }
    return Args(need("server"), need("user"), need("password-env"), need("caps"), need("peer"), need("peer-caps"), fault)
}

/** The app: one connection at a time, the core driven by the polling rule, and a
 *  table kept from the events alone (what a UI would show). */
class Phone(val args: Args, val core: Core) {
    val client = core.client
    var sock: Socket? = null
    val shown = mutableMapOf<Endpoint, CallParams>()
    val events = ArrayDeque<Event>()

    fun connect() {
        val (host, port) = args.server.split(":").let { it.dropLast(1).joinToString(":") to it.last().toInt() }
        sock = Socket().apply { connect(InetSocketAddress(host, port), WAIT_MS.toInt()) }
    }

    fun drain() {
        while (true) {
            val frame = client.pollTransmit() ?: break
            try {
                sock?.getOutputStream()?.write(frame)
            } catch (e: IOException) {
                // a broken connection: the next read says so
            }
        }
        while (true) {
            val ev = core.pollEvent() ?: break
            events.addLast(ev)
            when (ev) {
                is Event.PeerOnline -> shown[ev.peer] = ev.params
                is Event.PeerUpdated -> shown[ev.peer] = ev.params
                is Event.PeerOffline -> shown.remove(ev.peer)
                is Event.LoggedOut -> shown.clear()
                is Event.Resumed -> if (ev.snapshot) shown.clear()
                else -> {}
            }
        }
    }

    /** Runs the loop until an event of type T matching `pred` arrives. */
    inline fun <reified T : Event> wait(what: String, crossinline pred: (T) -> Boolean = { true }): T {
        var found: T? = null
        until(what) {
            val i = events.indexOfFirst { it is T && pred(it) }
            if (i >= 0) {
                found = events[i] as T
                repeat(i + 1) { events.removeFirst() }
            }
            found != null
        }
        return found!!
    }

    /** Runs the loop (bytes in, timers, the polling rule) until `done()`. */
    fun until(what: String, done: () -> Boolean) {
        val deadline = System.currentTimeMillis() + WAIT_MS
        val buf = ByteArray(65536)
        while (!done()) {
            val left = deadline - System.currentTimeMillis()
            check(left > 0) { "no $what within $WAIT_MS ms; events: $events" }
            val t = client.pollTimeout()
            if (t != null && t <= nowMs()) {
                client.handleTimeout(nowMs())
                drain()
                continue
            }
            val wake = if (t == null) left else minOf(left, (t - nowMs()).toLong())
            val s = sock ?: throw Fail("waiting for $what without a connection")
            s.soTimeout = maxOf(wake, 1L).toInt()
            val n = try {
                s.getInputStream().read(buf)
            } catch (e: SocketTimeoutException) {
                continue
            } catch (e: IOException) {
                -1 // reset: the connection is gone, as at EOF
            }
            if (n < 0) {
                s.close()
                sock = null
                client.connectionClosed(nowMs())
            } else {
                try {
                    client.receive(buf.copyOf(n), nowMs())
                } catch (e: PrecallException) {
                    throw Fail("the server's bytes were refused: $e")
                }
            }
            drain()
        }
    }

    /** The core's table, the app's table and negotiatePair agree. */
    fun checkTable(step: String, me: Capabilities, peerCaps: Capabilities): List<PeerEntry> {
        val entries = client.peers()
        val core = entries.associate { it.endpoint to it.params }
        check(core == shown) { "$step: the app's table $shown is not the core's $core" }
        val want = negotiatePair(me, peerCaps)
        for (e in entries) {
            check(e.endpoint.user == args.peer) { "$step: unexpected ${e.endpoint}" }
            check(e.capabilities == peerCaps) { "$step: ${e.capabilities} != $peerCaps" }
            check(e.params == want) { "$step: ${e.params} is not negotiatePair's $want" }
        }
        return entries
    }
}

fun say(line: String) {
    println(line)
    System.out.flush()
}

fun run(args: Args) {
    val me = capabilitiesFromJson(File(args.caps).readText())
    val peerCaps = capabilitiesFromJson(File(args.peerCaps).readText())
    val password = System.getenv(args.passwordEnv) ?: throw Fail("no ${args.passwordEnv} in the environment")
    val client = PrecallClient(ClientConfig(args.user, password, LoginWith.Capabilities(me), null, null))
    val app = Phone(args, if (args.fault == "drop-offline") DroppingOffline(client) else Plain(client))

    // Login: the table is complete at Synced, every entry pre-computed (claim C1).
    check(client.status() == Status.IDLE) { "status ${client.status()} before login" }
    var t0 = System.nanoTime()
    app.connect()
    client.login(nowMs())
    app.drain()
    val session = app.wait<Event.LoggedIn>("logged_in").session
    app.wait<Event.Synced>("synced")
    val syncedMs = (System.nanoTime() - t0) / 1e6
    check(client.status() == Status.ONLINE) { "status ${client.status()} after login" }
    var entries = app.checkTable("login", me, peerCaps)
    check(entries.size == 1) { "login: ${entries.size} terminals of ${args.peer} online, want 1" }
    val peer = entries[0].endpoint
    val params = entries[0].params
    say("step login: session $session, synced in ${"%.1f".format(syncedMs)} ms")
    say("step table: ${peer.user}/${peer.session} ${describe(params)}")

    // A fast-path call to the peer: no capability crosses the wire.
    say("ready answer")
    t0 = System.nanoTime()
    val tag = client.placeCall(peer, nowMs())
    app.drain()
    val call = app.wait<Event.CallRinging>("call_ringing") { it.req == tag }.call
    var est = app.wait<Event.CallEstablished>("call_established") { it.call == call }
    val setupMs = (System.nanoTime() - t0) / 1e6
    check(est.path == SetupPath.FAST) { "call: path ${est.path}" }
    check(est.params == params) { "call: ${est.params} is not the table's" }
    val calls = client.calls()
    check(calls.map { Triple(it.call, it.role, it.state) } == listOf(Triple(call, Role.CALLER, CallState.ESTABLISHED))) {
        "call: calls() is $calls"
    }
    client.hangup(call, nowMs())
    app.drain()
    check(client.calls().isEmpty()) { "after hangup: calls() is ${client.calls()}" }
    app.checkTable("call", me, peerCaps)
    say("step call: call $call fast, established in ${"%.1f".format(setupMs)} ms, hung up")

    // A call from the peer, answered.
    say("ready call-me")
    val inc = app.wait<Event.IncomingCall>("incoming_call")
    check(inc.caller == peer) { "answer: the caller is ${inc.caller}, not $peer" }
    check(inc.params == params) { "answer: ${inc.params} is not the table's" }
    client.answer(inc.call, true, nowMs())
    app.drain()
    est = app.wait<Event.CallEstablished>("call_established") { it.call == inc.call }
    check(est.path == SetupPath.FAST) { "answer: path ${est.path}" }
    client.hangup(inc.call, nowMs())
    app.drain()
    app.checkTable("answer", me, peerCaps)
    say("step answer: call ${inc.call} fast, hung up")

    // The harness cuts the connection under the app (a reset, no goodbye); the session
    // is resumed on a new one and the table kept (the peer never saw this terminal go
    // offline).
    say("ready drop")
    app.wait<Event.Detached>("detached")
    check(client.status() == Status.DETACHED) { "drop: status ${client.status()}" }
    check(client.canResume()) { "drop: cannot resume" }
    app.checkTable("detached", me, peerCaps)
    t0 = System.nanoTime()
    app.connect()
    client.resume(nowMs())
    app.drain()
    val res = app.wait<Event.Resumed>("resumed")
    check(res.session == session) { "resume: session ${res.session}, was $session" }
    app.wait<Event.Synced>("synced")
    val resumeMs = (System.nanoTime() - t0) / 1e6
    entries = app.checkTable("resume", me, peerCaps)
    check(entries.map { it.endpoint } == listOf(peer)) { "resume: table $entries" }
    say("step resume: session $session resumed in ${"%.1f".format(resumeMs)} ms (snapshot: ${res.snapshot}), table kept")

    // The peer logs out: its entry is deleted (claim C4).
    say("ready peer-offline")
    app.until("the peer's entry deleted") { client.peers().isEmpty() }
    app.checkTable("peer offline", me, peerCaps)
    say("step peer-offline: ${peer.user}/${peer.session} deleted")

    // Logout deletes everything (claim C5).
    client.logout(nowMs())
    app.drain()
    app.wait<Event.LoggedOut>("logged_out")
    check(client.status() == Status.IDLE) { "logout: status ${client.status()}" }
    check(client.peers().isEmpty() && client.contacts().isEmpty()) { "logout: something kept" }
    app.checkTable("logout", me, peerCaps)
    say("step logout: everything deleted")
}

fun main(argv: Array<String>) {
    val args = try {
        parseArgs(argv)
    } catch (e: IllegalArgumentException) {
        System.err.println("usage: --server ADDR --user U --password-env VAR --caps FILE --peer U --peer-caps FILE [--fault drop-offline]: ${e.message}")
        exitProcess(2)
    }
    try {
        run(args)
    } catch (e: Fail) {
        say("FAIL: ${e.message}")
        exitProcess(1)
    }
    say("done")
}
