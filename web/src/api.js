// The API client: typed from the API's own OpenAPI document (web/openapi.json, generated into
// src/generated/api.d.ts by `npm run types`), bearer token from the session, errors with the
// server's reason. `npm run check` type-checks every page against it, so a change to the API's
// contract fails the build instead of a user's page.
import createClient from "openapi-fetch";
import { useEffect, useRef, useState } from "react";

/** @typedef {import("./generated/api").paths} Paths */
/** @typedef {import("./generated/api").components["schemas"]} Schemas */
/** @typedef {Schemas["BookingView"]} Booking */
/** @typedef {Schemas["GeoPoint"]} GeoPoint */
/** @typedef {Schemas["ZoneOut"]} Zone */
/** @typedef {Schemas["User"]} User */
/** @typedef {Schemas["PostedPing"]} Ping */
/** @typedef {{ token: string, refresh: string, me: User }} Session */
/** What the notification socket sends (schemas/notifications.py; stream agents' own events are ignored). */
/** @typedef {Schemas["BookingNotice"] | Schemas["EtaNotice"] | Schemas["DriverLocation"] | Schemas["DriverStatusEvent"]} SocketMessage */

const KEY = "fleetstream.session";

/** @returns {Session | null} */
export function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) ?? "null");
  } catch {
    return null;
  }
}

/** @param {Session | null} session */
export function saveSession(session) {
  if (session) sessionStorage.setItem(KEY, JSON.stringify(session));
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  /** @param {number} status @param {unknown} detail */
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

/** @type {import("openapi-fetch").Client<Paths>} */
export const client = createClient();

/** The Authorization header of a bearer token. @param {string | null | undefined} token */
export function bearer(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/**
 * What a call answered, or an ApiError with the server's reason (its ``detail``).
 * @template T
 * @param {Promise<{ data?: T, error?: unknown, response: Response }>} call
 * @returns {Promise<T>}
 */
export async function ok(call) {
  const { data, error, response } = await call;
  if (!response.ok) {
    const detail = error && typeof error === "object" && "detail" in error ? error.detail : response.statusText;
    throw new ApiError(response.status, detail);
  }
  return /** @type {T} */ (data);
}

/** The message of anything thrown. @param {unknown} e */
export function reason(e) {
  return e instanceof Error ? e.message : String(e);
}

/** @param {string} email @param {string} password @returns {Promise<Session>} */
export async function login(email, password) {
  const tokens = await ok(client.POST("/v1/auth/login", { body: { email, password } }));
  const me = await ok(client.GET("/v1/auth/me", { headers: bearer(tokens.access_token) }));
  return { token: tokens.access_token, refresh: tokens.refresh_token, me };
}

// Live notifications: one socket, reconnecting with the greatest id seen so that nothing is
// missed and nothing arrives twice (the server replays what came after it). Greatest, not
// last: a message taken over from a failed worker can arrive after one with a greater id.

/** Stream ids "ms-seq", compared as numbers. @param {string} a @param {string} b */
export function laterId(a, b) {
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  return am > bm || (am === bm && as > bs) ? a : b;
}

/** @param {SocketMessage} msg @returns {msg is Schemas["BookingNotice"]} */
export function isBookingNotice(msg) {
  return msg.type.startsWith("booking.");
}

/**
 * @param {string | null | undefined} token
 * @param {(msg: SocketMessage) => void} onMessage
 */
export function useNotifications(token, onMessage) {
  const handler = useRef(onMessage);
  handler.current = onMessage;
  const [connected, setConnected] = useState(false);
  useEffect(() => {
    if (!token) return undefined;
    /** @type {string | null} */
    let last = null;
    /** @type {WebSocket | null} */
    let ws = null;
    let stopped = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let retry;
    const open = () => {
      const proto = location.protocol === "https:" ? "wss" : "ws";
      const after = last ? `&after=${encodeURIComponent(last)}` : "";
      ws = new WebSocket(`${proto}://${location.host}/v1/notifications?token=${encodeURIComponent(token)}${after}`);
      ws.onopen = () => setConnected(true);
      ws.onmessage = (ev) => {
        const msg = JSON.parse(ev.data);
        if (msg.id) last = last ? laterId(msg.id, last) : msg.id;
        if (msg.type === "heartbeat" || msg.type === "subscribed") return;
        handler.current(msg);
      };
      ws.onclose = () => {
        setConnected(false);
        if (!stopped) retry = setTimeout(open, 1000);
      };
    };
    open();
    return () => {
      stopped = true;
      clearTimeout(retry);
      ws?.close();
    };
  }, [token]);
  return connected;
}

/** @param {number | null | undefined} s */
export function fmtDuration(s) {
  if (s === null || s === undefined) return "—";
  const m = Math.floor(s / 60);
  const sec = Math.round(s % 60);
  return m ? `${m} min ${sec} s` : `${sec} s`;
}
