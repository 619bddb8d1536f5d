import { useState } from "react";
import { login, reason } from "../api.js";

/** @param {{ onLogin: (s: import("../api.js").Session) => void, session?: import("../api.js").Session | null }} props */
export default function Login({ onLogin, session }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState(/** @type {string | null} */ (null));
  if (session) {
    return <p className="p-6">Signed in as {session.me.email}. Choose a page above.</p>;
  }
  /** @param {import("react").FormEvent} e */
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      onLogin(await login(email, password));
    } catch (err) {
      setError(reason(err));
    }
  };
  return (
    <form onSubmit={submit} className="mx-auto mt-24 flex w-80 flex-col gap-3 rounded-lg bg-white p-6 shadow">
      <h1 className="text-lg font-semibold">Sign in</h1>
      <input className="rounded border px-2 py-1" placeholder="email" name="email" value={email} onChange={(e) => setEmail(e.target.value)} />
      <input
        className="rounded border px-2 py-1"
        placeholder="password"
        name="password"
        type="password"
        value={password}
        onChange={(e) => setPassword(e.target.value)}
      />
      <button className="rounded bg-indigo-600 py-1 text-white" type="submit">
        Sign in
      </button>
      {error && (
        <p className="text-sm text-red-600" role="alert">
          {error}
        </p>
      )}
      <p className="text-xs text-slate-500">`fleetstream demo` prints a dispatcher, a customer and a driver to try.</p>
    </form>
  );
}
