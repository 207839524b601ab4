// journey.mjs: a user's whole 3PID journey through matrix-js-sdk, as a real
// client makes it, against a base URL (nginx in front of threepidd and the
// homeserver).
//
//   JOURNEY_PASSWORD=secret node journey.mjs --base-url http://127.0.0.1:8080 \
//       --user alice --email alice@example.org \
//       --phone-country GB --phone-number '07700 900123' \
//       --identity-server http://127.0.0.1:8091 --control http://127.0.0.1:8092
//
// Each option falls back to an environment variable: JOURNEY_BASE_URL,
// JOURNEY_USER, JOURNEY_PASSWORD, JOURNEY_EMAIL, JOURNEY_PHONE_COUNTRY,
// JOURNEY_PHONE_NUMBER, JOURNEY_IDENTITY_SERVER, JOURNEY_CONTROL. The phone
// number is given as a user types it, in the national format of its country.
// --steps discovery (JOURNEY_STEPS) runs DISCOVERY_STEPS instead of STEPS:
// Element's Discovery settings with the user's own identity server.
//
// The steps a client cannot make alone are asked of the test that runs the
// script, through its control endpoint (--control, 127.0.0.1 only):
//   GET  /mail?to=ADDRESS    waits for the validation mail, answers {"link"}
//   GET  /sms                waits for the validation SMS to the journey's
//                            phone number (the test knows its E.164 form),
//                            answers {"to","token","text"} as the gateway got it
//   GET  /identity-session   a session validated on the identity server,
//                            answers {"sid","client_secret","id_access_token"}
//   GET  /identity-binding   whom the identity server binds the journey's
//                            address to now: {"mxid"} ("" for nobody)
//   POST /takeover           once a long-polling /sync is parked in threepidd,
//                            another user binds the address on the identity
//                            server, which sends threepidd a signed onupdate;
//                            answers {"mxid","replaced"}: the new owner
//                            and whom the identity server bound before
// A control answer other than 200 fails the step with its body as message.
//
// Every step prints one JSON line on stdout:
//   {"step":"<name>","ok":true,"ms":<duration>,"result":<what the step returned>}
//   {"step":"<name>","ok":false,"ms":<duration>,"error":{"name","message","httpStatus","errcode","data"}}
// The journey stops at the first failed step and exits 1; it exits 0 when
// every step passed. Nothing else is written to stdout (the SDK's own logging
// is silenced), so the caller can parse every line. Steps share one state
// object; to extend the journey, add to STEPS.

import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel("silent");

// matrix-js-sdk 43 declares Node >= 22, and its event sending path
// (sendTextMessage → encryptAndSendEvent) calls Promise.withResolvers, which
// Node 20 lacks ("Promise.withResolvers is not a function"). This is the
// standard's definition, for Node 20 only.
Promise.withResolvers ??= function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => {
        resolve = res;
        reject = rej;
    });
    return { promise, resolve, reject };
};

/** How long a long-polling /sync may wait upstream, in ms. */
const SYNC_TIMEOUT_MS = 30000;
/** How many incremental syncs may pass before the room message must have come. */
const MAX_MESSAGE_SYNCS = 5;
/** The text of the room message sent after the takeover. */
const MESSAGE_TEXT = "threepidd journey: room messages keep coming";

/** Each step is {name, run(state) → result}; a step may add to state for the next ones. */
const STEPS = [
    {
        name: "login",
        async run(state) {
            const anonymous = sdk.createClient({ baseUrl: state.baseUrl });
            const res = await anonymous.loginRequest({
                type: "m.login.password",
                identifier: { type: "m.id.user", user: state.user },
                password: state.password,
                initial_device_display_name: "threepidd realpeer journey",
            });
            state.client = sdk.createClient({
                baseUrl: state.baseUrl,
                idBaseUrl: state.identityServer,
                accessToken: res.access_token,
                userId: res.user_id,
                deviceId: res.device_id,
            });
            return { user_id: res.user_id, device_id: res.device_id };
        },
    },
    {
        name: "whoami",
        run: (state) => state.client.whoami(),
    },
    {
        name: "getThreePids",
        run: (state) => state.client.getThreePids(),
    },
    {
        name: "requestAdd3pidEmailToken",
        async run(state) {
            state.clientSecret = randomBytes(16).toString("hex");
            const res = await state.client.requestAdd3pidEmailToken(state.email, state.clientSecret, 1);
            state.sid = res.sid;
            return res;
        },
    },
    {
        // Element's "Resend": the same session, a higher send_attempt; a
        // second mail comes, and the first one's link must still work.
        name: "resendAdd3pidEmailToken",
        async run(state) {
            const res = await state.client.requestAdd3pidEmailToken(state.email, state.clientSecret, 2);
            if (res.sid !== state.sid) {
                throw new Error(`the resend answered sid ${res.sid}, want ${state.sid}`);
            }
            return res;
        },
    },
    {
        // The first mail's link.
        name: "readMail",
        async run(state) {
            const res = await control(state, "GET", "/mail?to=" + encodeURIComponent(state.email));
            state.link = res.link;
            return res;
        },
    },
    {
        // As the person in a browser: the link opens a page (which
        // validates nothing), whose button submits its form.
        name: "openLink",
        async run(state) {
            const page = await fetch(state.link, { redirect: "manual" });
            const html = await page.text();
            if (page.status !== 200) {
                throw new Error(`validation link answered ${page.status}: ${html}`);
            }
            const form = pageForm(html, state.link);
            const res = await fetch(form.action, {
                method: form.method,
                headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: new URL(state.link).origin },
                body: form.values.toString(),
                redirect: "manual",
            });
            const body = await res.text();
            if (!res.ok) {
                throw new Error(`the confirmation answered ${res.status}: ${body}`);
            }
            return {
                page_status: page.status,
                csp: page.headers.get("content-security-policy"),
                form: { method: form.method, action: form.action, fields: [...form.values.keys()].sort() },
                status: res.status,
                content_type: res.headers.get("content-type"),
            };
        },
    },
    {
        // Through user-interactive auth (addWithUIA).
        name: "addThreePidOnly",
        run: (state) => addWithUIA(state, { sid: state.sid, client_secret: state.clientSecret }),
    },
    {
        // The relay to the homeserver must leave this client logged in, on
        // the same device, with every device of the user still there.
        name: "afterAdd",
        async run(state) {
            const who = await state.client.whoami();
            const { devices } = await state.client.getDevices();
            return { whoami: who, device_ids: devices.map((d) => d.device_id).sort() };
        },
    },
    {
        name: "getThreePidsAfterAdd",
        run: (state) => state.client.getThreePids(),
    },
    {
        name: "bindThreePid",
        run: (state) => bindOnIdentityServer(state),
    },
    {
        name: "createRoom",
        async run(state) {
            const res = await state.client.createRoom({ name: "threepidd journey", preset: "private_chat" });
            state.roomId = res.room_id;
            return res;
        },
    },
    {
        name: "initialSync",
        async run(state) {
            const res = await sync(state, undefined, 0);
            state.since = res.next_batch;
            return { next_batch: res.next_batch, threepids: res.threepids ?? null, joined: Object.keys(res.rooms?.join ?? {}) };
        },
    },
    {
        // A long-polling /sync is parked in threepidd (upstream in Dendrite)
        // when the identity server reports that someone else took the
        // address over: the sync returns with the threepids section.
        name: "syncTakeover",
        async run(state) {
            const started = Date.now();
            const pending = sync(state, state.since, SYNC_TIMEOUT_MS);
            // If the takeover fails, the sync still has to end before the
            // step can report; it ends at the latest after SYNC_TIMEOUT_MS.
            const takeover = await control(state, "POST", "/takeover").catch(async (err) => {
                await pending.catch(() => {});
                throw err;
            });
            const res = await pending;
            const since = state.since;
            state.since = res.next_batch;
            return {
                since,
                next_batch: res.next_batch,
                threepids: res.threepids ?? null,
                new_owner: takeover.mxid,
                replaced: takeover.replaced,
                elapsed_ms: Date.now() - started,
            };
        },
    },
    {
        // Room traffic keeps flowing through the proxy after the wake-up:
        // the message sent now arrives in one of the next syncs.
        name: "syncMessage",
        async run(state) {
            const sent = await state.client.sendTextMessage(state.roomId, MESSAGE_TEXT);
            const rounds = [];
            for (let i = 0; i < MAX_MESSAGE_SYNCS; i++) {
                const res = await sync(state, state.since, SYNC_TIMEOUT_MS);
                state.since = res.next_batch;
                const events = res.rooms?.join?.[state.roomId]?.timeline?.events ?? [];
                const found = events.find((e) => e.event_id === sent.event_id);
                rounds.push({ threepids: res.threepids ?? null, events: events.length });
                if (found) {
                    return { event_id: sent.event_id, body: found.content?.body, rounds };
                }
            }
            throw new Error(`message ${sent.event_id} not in ${MAX_MESSAGE_SYNCS} syncs: ${JSON.stringify(rounds)}`);
        },
    },
    {
        name: "unbindThreePid",
        run: (state) => state.client.unbindThreePid("email", state.email),
    },
    {
        name: "deleteThreePid",
        run: (state) => state.client.deleteThreePid("email", state.email),
    },
    {
        name: "getThreePidsAfterDelete",
        run: (state) => state.client.getThreePids(),
    },
    // The phone number, as Element adds one (AddThreepid.addMsisdn and
    // haveMsisdnToken): requestToken on the homeserver, the code from the SMS
    // submitted to the submit_url it answered, then /3pid/add through UIA.
    {
        name: "requestAdd3pidMsisdnToken",
        async run(state) {
            state.msisdnSecret = randomBytes(16).toString("hex");
            const res = await state.client.requestAdd3pidMsisdnToken(
                state.phoneCountry,
                state.phoneNumber,
                state.msisdnSecret,
                1,
            );
            // Without submit_url Element has nowhere to send the code ("The
            // add / bind with MSISDN flow is misconfigured").
            if (!res?.sid || !res.submit_url) {
                throw new Error(`requestAdd3pidMsisdnToken answered ${JSON.stringify(res)}; want sid and submit_url`);
            }
            state.msisdnSid = res.sid;
            state.submitUrl = res.submit_url;
            return res;
        },
    },
    {
        name: "readSMS",
        async run(state) {
            const res = await control(state, "GET", "/sms");
            state.smsCode = res.token;
            return res;
        },
    },
    {
        // A mistyped code: the SDK must reject with a MatrixError carrying
        // the errcode (Element shows it), and the session must survive it.
        name: "submitMsisdnTokenWrongCode",
        async run(state) {
            const wrong = otherCode(state.smsCode);
            try {
                await state.client.submitMsisdnTokenOtherUrl(state.submitUrl, state.msisdnSid, state.msisdnSecret, wrong);
            } catch (err) {
                return { code: wrong, matrix_error: err instanceof sdk.MatrixError, error: describe(err) };
            }
            throw new Error(`submitMsisdnTokenOtherUrl accepted the wrong code ${wrong} (the SMS said ${state.smsCode})`);
        },
    },
    {
        name: "submitMsisdnTokenOtherUrl",
        run: (state) =>
            state.client.submitMsisdnTokenOtherUrl(state.submitUrl, state.msisdnSid, state.msisdnSecret, state.smsCode),
    },
    {
        name: "addThreePidOnlyMsisdn",
        run: (state) => addWithUIA(state, { sid: state.msisdnSid, client_secret: state.msisdnSecret }),
    },
    {
        // Element lists the account's 3PIDs and deletes by the address listed.
        name: "getThreePidsAfterMsisdnAdd",
        async run(state) {
            const res = await state.client.getThreePids();
            const phone = res.threepids?.find((t) => t.medium === "msisdn");
            if (!phone) {
                throw new Error(`getThreePids lists no msisdn after the add: ${JSON.stringify(res)}`);
            }
            state.msisdnAddress = phone.address;
            return res;
        },
    },
    {
        name: "deleteThreePidMsisdn",
        run: (state) => state.client.deleteThreePid("msisdn", state.msisdnAddress),
    },
    {
        name: "getThreePidsAfterMsisdnDelete",
        run: (state) => state.client.getThreePids(),
    },
];

/**
 * The Discovery journey, as Element's Discovery settings make it with the
 * identity server the user chose (one the homeserver does not know): the
 * address is added to the account as in STEPS, then shared (bound on the
 * identity server through the homeserver), revoked (unbindThreePid, which
 * always names the identity server), shared again and deleted from the
 * account (deleteThreePid, which names none). Each step after the add also
 * reports whom the identity server binds the address to afterwards.
 */
const DISCOVERY_STEPS = [
    ...["login", "requestAdd3pidEmailToken", "readMail", "openLink", "addThreePidOnly"].map(
        (name) => STEPS.find((step) => step.name === name),
    ),
    { name: "share", run: (state) => withBinding(state, bindOnIdentityServer(state)) },
    { name: "revoke", run: (state) => withBinding(state, state.client.unbindThreePid("email", state.email)) },
    { name: "shareAgain", run: (state) => withBinding(state, bindOnIdentityServer(state)) },
    { name: "deleteShared", run: (state) => withBinding(state, state.client.deleteThreePid("email", state.email)) },
    { name: "getThreePidsAfterDelete", run: (state) => state.client.getThreePids() },
];

/**
 * bindOnIdentityServer binds the journey's address on the client's identity
 * server through the homeserver (bindThreePid), with a session the test
 * validated there, as a client does once the user clicked the identity
 * server's mail.
 */
async function bindOnIdentityServer(state) {
    const session = await control(state, "GET", "/identity-session");
    return state.client.bindThreePid({
        sid: session.sid,
        client_secret: session.client_secret,
        id_server: state.client.getIdentityServerUrl(true),
        id_access_token: session.id_access_token,
    });
}

/** withBinding answers {answer, bound}: what pending resolved to, then whom the identity server binds the address to. */
async function withBinding(state, pending) {
    const answer = await pending;
    const { mxid } = await control(state, "GET", "/identity-binding");
    return { answer, bound: mxid };
}

/**
 * addWithUIA adds a validated 3PID with the spec's user-interactive auth, as
 * a client does it: the first call without auth gets 401 with flows and a
 * session, the second sends the password within that session.
 */
async function addWithUIA(state, creds) {
    let challenge;
    try {
        await state.client.addThreePidOnly(creds);
        throw new Error("addThreePidOnly without auth succeeded; want a 401 challenge");
    } catch (err) {
        if (err?.httpStatus !== 401 || !err.data?.session) {
            throw err;
        }
        challenge = err.data;
    }
    const result = await state.client.addThreePidOnly({
        ...creds,
        auth: {
            type: "m.login.password",
            identifier: { type: "m.id.user", user: state.user },
            password: state.password,
            session: challenge.session,
        },
    });
    return { challenge: { flows: challenge.flows, session: challenge.session }, result };
}

/** otherCode returns a code of the same length as code that differs from it in its last digit. */
function otherCode(code) {
    const last = Number(code.at(-1));
    return code.slice(0, -1) + String((Number.isNaN(last) ? 0 : last + 1) % 10);
}

/** sync makes one /sync through the SDK's HTTP layer (initial when since is undefined). */
function sync(state, since, timeoutMs) {
    const query = { timeout: String(timeoutMs) };
    if (since !== undefined) {
        query.since = since;
    }
    // Not the SDK's localTimeoutMs: its timer is never cleared and keeps
    // Node running until it fires; AbortSignal.timeout's does not.
    return state.client.http.authedRequest(sdk.Method.Get, "/sync", query, undefined, {
        abortSignal: AbortSignal.timeout(timeoutMs + 30000),
    });
}

/** control asks the test for what a client cannot do alone; see the top of the file. */
/**
 * The first form of an HTML page, as a browser submits it: its method, its
 * action resolved against the page's URL, and the name and value of each
 * named input.
 */
function pageForm(html, pageUrl) {
    const form = html.match(/<form\b([^>]*)>([\s\S]*?)<\/form>/i);
    if (!form) {
        throw new Error(`the page has no form: ${html}`);
    }
    const attr = (tag, name) => {
        const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*"([^"]*)"`, "i"));
        return m ? decodeEntities(m[1]) : "";
    };
    const values = new URLSearchParams();
    for (const [input] of form[2].matchAll(/<input\b[^>]*>/gi)) {
        if (attr(input, "name")) {
            values.append(attr(input, "name"), attr(input, "value"));
        }
    }
    return {
        method: (attr(form[1], "method") || "get").toUpperCase(),
        action: new URL(attr(form[1], "action"), pageUrl).href,
        values,
    };
}

/** Decodes the character references an HTML attribute value may hold. */
function decodeEntities(s) {
    const named = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
    return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (ref, name) => {
        if (name[0] === "#") {
            return String.fromCodePoint(name[1] === "x" || name[1] === "X" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10));
        }
        return named[name.toLowerCase()] ?? ref;
    });
}

async function control(state, method, path) {
    const res = await fetch(state.control + path, { method });
    const body = await res.text();
    if (res.status !== 200) {
        throw new Error(`control ${method} ${path}: ${res.status}: ${body}`);
    }
    return JSON.parse(body);
}

const OPTIONS = ["base-url", "user", "password", "email", "phone-country", "phone-number", "identity-server", "control"];

function options() {
    const spec = {};
    for (const name of OPTIONS) {
        spec[name] = { type: "string", default: process.env["JOURNEY_" + name.toUpperCase().replaceAll("-", "_")] };
    }
    spec.steps = { type: "string", default: process.env.JOURNEY_STEPS ?? "journey" };
    const { values } = parseArgs({ options: spec });
    for (const name of OPTIONS) {
        if (!values[name]) {
            throw new Error(`missing --${name} (or its JOURNEY_* environment variable)`);
        }
    }
    const steps = { journey: STEPS, discovery: DISCOVERY_STEPS }[values.steps];
    if (!steps) {
        throw new Error(`--steps ${values.steps}: want journey or discovery`);
    }
    return {
        steps,
        baseUrl: values["base-url"],
        user: values.user,
        password: values.password,
        email: values.email,
        phoneCountry: values["phone-country"],
        phoneNumber: values["phone-number"],
        identityServer: values["identity-server"],
        control: values.control,
    };
}

function describe(err) {
    return {
        name: err?.name ?? "Error",
        message: String(err?.message ?? err),
        httpStatus: err?.httpStatus ?? null,
        errcode: err?.errcode ?? null,
        data: err?.data ?? null,
    };
}

function emit(line) {
    process.stdout.write(JSON.stringify(line) + "\n");
}

async function main() {
    let state;
    try {
        state = options();
    } catch (err) {
        emit({ step: "options", ok: false, error: describe(err) });
        return 1;
    }
    try {
        for (const step of state.steps) {
            const started = Date.now();
            try {
                const result = await step.run(state);
                emit({ step: step.name, ok: true, ms: Date.now() - started, result: result ?? null });
            } catch (err) {
                emit({ step: step.name, ok: false, ms: Date.now() - started, error: describe(err) });
                return 1;
            }
        }
        return 0;
    } finally {
        state.client?.stopClient();
    }
}

process.exitCode = await main();
