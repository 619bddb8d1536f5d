// The API client: bearer token from the session, JSON in and out, errors with the server's reason.
import { useEffect, useRef, useState } from "react";

const KEY = "fleetstream.session";

export function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

export function saveSession(session) {
  if (session) sessionStorage.setItem(KEY, JSON.stringify(session));
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

export async function api(path, { token, method = "GET", body, headers = {} } = {}) {
  const res = await fetch(path, {
    method,
    headers: {
      ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, data?.detail ?? res.statusText);
  return data;
}

export async function login(email, password) {
  const tokens = await api("/v1/auth/login", { method: "POST", body: { email, password } });
  const me = await api("/v1/auth/me", { token: tokens.access_token });
  return { token: tokens.access_token, refresh: tokens.refresh_token, me };
}

// Live notifications: one socket, reconnecting with the id of the last message seen so that
// nothing is missed and nothing arrives twice (the server replays what came after it).
export function useNotifications(token, onMessage) {
  const handler = useRef(onMessage);
  handler.current = onMessage;
  const [connected, setConnected] = useState(false);
  useEffect(() => {
    if (!token) return undefined;
    let last = null;
    let ws = null;
    let stopped = false;
    let retry = null;
    const open = () => {
      const proto = location.protocol === "https:" ? "wss" : "ws";
      const after = last ? `&after=${encodeURIComponent(last)}` : "";
      ws = new WebSocket(`${proto}://${location.host}/v1/notifications?token=${encodeURIComponent(token)}${after}`);
      ws.onopen = () => setConnected(true);
      ws.onmessage = (ev) => {
        const msg = JSON.parse(ev.data);
        if (msg.type === "heartbeat") return;
        if (msg.id) last = msg.id;
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

export function fmtDuration(s) {
  if (s === null || s === undefined) return "—";
  const m = Math.floor(s / 60);
  const sec = Math.round(s % 60);
  return m ? `${m} min ${sec} s` : `${sec} s`;
}
