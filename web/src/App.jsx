import { useEffect, useState } from "react";
import { loadSession, saveSession } from "./api.js";
import Login from "./pages/Login.jsx";
import Dispatcher from "./pages/Dispatcher.jsx";
import Customer from "./pages/Customer.jsx";
import Driver from "./pages/Driver.jsx";

/** @type {Record<string, string>} */
const HOME = { dispatcher: "#/dispatcher", admin: "#/dispatcher", customer: "#/customer", driver: "#/driver" };

function useHash() {
  const [hash, setHash] = useState(location.hash || "#/");
  useEffect(() => {
    const on = () => setHash(location.hash || "#/");
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

export default function App() {
  const hash = useHash();
  const [session, setSession] = useState(loadSession);
  /** @param {import("./api.js").Session} s */
  const signIn = (s) => {
    saveSession(s);
    setSession(s);
    location.hash = HOME[s.me.role] ?? "#/";
  };
  const signOut = () => {
    saveSession(null);
    setSession(null);
    location.hash = "#/";
  };
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query ?? "");
  let page;
  const center = params.get("center");
  if (path === "/track" && params.get("t"))
    page = <Customer session={session} bookingId={params.get("booking")} center={center} shareToken={params.get("t")} />;
  else if (!session) page = <Login onLogin={signIn} />;
  else if (path === "/dispatcher") page = <Dispatcher session={session} center={center} />;
  else if (path === "/customer") page = <Customer session={session} bookingId={params.get("booking")} center={center} />;
  else if (path === "/driver") page = <Driver session={session} center={center} />;
  else page = <Login onLogin={signIn} session={session} />;
  return (
    <div className="flex h-screen flex-col">
      <header className="flex items-center gap-4 bg-slate-900 px-4 py-2 text-white">
        <span className="font-semibold tracking-wide">Fleetstream</span>
        {session && (
          <>
            <nav className="flex gap-3 text-sm text-slate-300">
              {["dispatcher", "admin"].includes(session.me.role) && <a href="#/dispatcher">Dispatch</a>}
              {session.me.role === "customer" && <a href="#/customer">My deliveries</a>}
              {session.me.role === "driver" && <a href="#/driver">Driver</a>}
            </nav>
            <span className="ml-auto text-sm text-slate-300" data-testid="whoami">
              {session.me.email} ({session.me.role})
            </span>
            <button className="rounded bg-slate-700 px-2 py-1 text-sm" onClick={signOut}>
              Sign out
            </button>
          </>
        )}
      </header>
      <main className="min-h-0 flex-1">{page}</main>
    </div>
  );
}
