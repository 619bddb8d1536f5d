// The driver's app without a phone: click the map to be somewhere (the page posts your position like a
// device), get offers, accept or decline, drive there, mark arrived / picked up / delivered.
import { useEffect, useRef, useState } from "react";
import L from "leaflet";
import { bearer, client, fmtDuration, isBookingNotice, ok, reason, useNotifications } from "../api.js";
import { pin, useLeaflet } from "../Map.jsx";

const SPEED_MPS = 12;

/** @typedef {import("../api.js").Booking} Booking */
/** @typedef {import("../api.js").GeoPoint} GeoPoint */

/** @param {GeoPoint} p @param {GeoPoint} target @param {number} metres @returns {GeoPoint} */
function towards(p, target, metres) {
  const dy = (target.lat - p.lat) * 111320;
  const dx = (target.lon - p.lon) * 111320 * Math.cos((p.lat * Math.PI) / 180);
  const d = Math.hypot(dx, dy);
  if (d <= metres) return { ...target };
  return { lat: p.lat + ((dy / d) * metres) / 111320, lon: p.lon + ((dx / d) * metres) / (111320 * Math.cos((p.lat * Math.PI) / 180)) };
}

/** @param {{ session: import("../api.js").Session, center: string | null }} props */
export default function Driver({ session, center }) {
  const token = session.token;
  const [pos, setPos] = useState(/** @type {GeoPoint | null} */ (null));
  const [target, setTarget] = useState(/** @type {GeoPoint | null | undefined} */ (null));
  // An offer is the booking.offered socket message (schemas/events.py), a job the booking's view.
  const [offer, setOffer] = useState(/** @type {(Partial<Booking> & { booking_id: string }) | null} */ (null));
  const [job, setJob] = useState(/** @type {Booking | null} */ (null));
  const [proof, setProof] = useState("");
  const [error, setError] = useState(/** @type {string | null} */ (null));
  const [posted, setPosted] = useState(0);
  const posRef = useRef(/** @type {GeoPoint | null} */ (null));
  posRef.current = pos;
  const layers = useRef(/** @type {{ me: L.LayerGroup, job: L.LayerGroup } | null} */ (null));
  const me = useRef(/** @type {L.CircleMarker | null} */ (null));
  const [mapRef, map] = useLeaflet((ll) => setPos({ lat: ll.lat, lon: ll.lng }), center);

  useEffect(() => {
    if (map) layers.current = { me: L.layerGroup().addTo(map), job: L.layerGroup().addTo(map) };
  }, [map]);

  // The device: one fix a second, posted every two seconds; drives towards the target if there is one.
  useEffect(() => {
    /** @type {import("../api.js").Ping[]} */
    let buffer = [];
    /** @type {GeoPoint | null} */
    let last = null;
    const tick = setInterval(() => {
      const p = posRef.current;
      if (!p) return;
      let next = p;
      if (target) {
        next = towards(p, target, SPEED_MPS);
        if (next.lat === target.lat && next.lon === target.lon) setTarget(null);
        setPos(next);
      }
      const speed = last ? (next === p ? 0 : SPEED_MPS) : 0;
      last = next;
      buffer.push({ seq: Date.now(), ts: new Date().toISOString(), lat: next.lat, lon: next.lon, accuracy_m: 5, speed_mps: speed });
    }, 1000);
    const post = setInterval(async () => {
      if (!buffer.length) return;
      const pings = buffer;
      buffer = [];
      try {
        const r = await ok(client.POST("/v1/telemetry", { body: { pings }, headers: bearer(token) }));
        setPosted((n) => n + r.accepted);
      } catch (e) {
        setError(`position not sent: ${reason(e)}`);
        buffer = [...pings.slice(-60), ...buffer];
      }
    }, 2000);
    return () => {
      clearInterval(tick);
      clearInterval(post);
    };
  }, [token, target]);

  useEffect(() => {
    if (!layers.current || !pos) return;
    me.current ??= L.circleMarker([pos.lat, pos.lon], { radius: 8, color: "#0f172a", fillColor: "#16a34a", fillOpacity: 1, className: "me" }).addTo(layers.current.me);
    me.current.setLatLng([pos.lat, pos.lon]);
  }, [pos, map]);

  useEffect(() => {
    if (!layers.current) return;
    layers.current.job.clearLayers();
    const b = job ?? offer;
    if (b?.pickup) pin([b.pickup.lat, b.pickup.lon], "pickup", "#22c55e").addTo(layers.current.job);
    if (b?.dropoff) pin([b.dropoff.lat, b.dropoff.lon], "dropoff", "#ef4444").addTo(layers.current.job);
  }, [job, offer, map]);

  const connected = useNotifications(token, (msg) => {
    if (!isBookingNotice(msg)) return;
    if (msg.type === "booking.offered") setOffer(msg);
    else if (job && msg.booking_id === job.booking_id) setJob((j) => (j ? { ...j, ...msg } : j));
  });

  /** @param {"accept" | "decline" | "arrived" | "picked-up" | "delivered"} action */
  const act = async (action) => {
    const b = job ?? offer;
    if (!b) return;
    setError(null);
    const init = { params: { path: { booking_id: b.booking_id } }, headers: bearer(token) };
    try {
      const r = await ok(
        action === "accept"
          ? client.POST("/v1/bookings/{booking_id}/accept", init)
          : action === "decline"
            ? client.POST("/v1/bookings/{booking_id}/decline", { ...init, body: { reason: "declined in the app" } })
            : action === "arrived"
              ? client.POST("/v1/bookings/{booking_id}/arrived", init)
              : action === "picked-up"
                ? client.POST("/v1/bookings/{booking_id}/picked-up", init)
                : client.POST("/v1/bookings/{booking_id}/delivered", { ...init, body: { proof } }),
      );
      // 202 "pending": the agent has not answered yet; its booking event on the socket will.
      const view = r.status === "pending" ? null : r;
      if (action === "accept") {
        if (view) setJob(view);
        setOffer(null);
      } else if (action === "decline") setOffer(null);
      else if (view) setJob(["delivered", "cancelled"].includes(view.status) ? null : view);
    } catch (e) {
      setError(reason(e));
      if (action === "accept" || action === "decline") setOffer(null);
    }
  };

  return (
    <div className="flex h-full">
      <div ref={mapRef} className="h-full flex-1" data-testid="map" />
      <aside className="flex w-96 flex-col gap-3 bg-white p-4 text-sm">
        <div className="flex items-center">
          <h2 className="text-base font-semibold">Driver {session.me.driver_id}</h2>
          <span className={`ml-auto rounded px-2 ${connected ? "bg-emerald-600 text-white" : "bg-red-600 text-white"}`}>{connected ? "live" : "reconnecting"}</span>
        </div>
        <p>{pos ? `At ${pos.lat.toFixed(5)}, ${pos.lon.toFixed(5)} — ${posted} fixes sent.` : "Click the map to say where you are."}</p>
        {error && <p className="text-red-600">{error}</p>}
        {offer && !job && (
          <div className="rounded border border-amber-300 bg-amber-50 p-3" data-testid="offer">
            <b>New offer</b> — pickup in about {fmtDuration(offer.eta_s)}
            <div className="mt-2 flex gap-2">
              <button className="flex-1 rounded bg-emerald-600 py-1 text-white" onClick={() => act("accept")}>
                Accept
              </button>
              <button className="flex-1 rounded bg-slate-300 py-1" onClick={() => act("decline")}>
                Decline
              </button>
            </div>
          </div>
        )}
        {job && (
          <div className="flex flex-col gap-2 rounded border p-3" data-testid="job">
            <b>Job {job.booking_id.slice(0, 8)}</b> <span data-testid="job-status">{job.status}</span>
            <button className="rounded bg-slate-200 py-1" onClick={() => setTarget(job.status === "picked_up" ? job.dropoff : job.pickup)}>
              Drive to {job.status === "picked_up" ? "dropoff" : "pickup"}
            </button>
            {job.status === "assigned" && (
              <button className="rounded bg-indigo-600 py-1 text-white" onClick={() => act("arrived")}>
                I have arrived
              </button>
            )}
            {job.status === "driver_arrived" && (
              <button className="rounded bg-indigo-600 py-1 text-white" onClick={() => act("picked-up")}>
                Picked up
              </button>
            )}
            {job.status === "picked_up" && (
              <>
                <input className="rounded border px-2 py-1" placeholder="proof (name of recipient)" value={proof} onChange={(e) => setProof(e.target.value)} />
                <button className="rounded bg-indigo-600 py-1 text-white disabled:opacity-40" disabled={!proof} onClick={() => act("delivered")}>
                  Delivered
                </button>
              </>
            )}
          </div>
        )}
      </aside>
    </div>
  );
}
