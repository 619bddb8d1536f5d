// Book by clicking pickup then dropoff; then watch the driver approach, the ETA fall and the status move.
import { useEffect, useRef, useState } from "react";
import L from "leaflet";
import { ApiError, api, fmtDuration, useNotifications } from "../api.js";
import { pin, useLeaflet } from "../Map.jsx";

const STEPS = ["requested", "offered", "assigned", "driver_arrived", "picked_up", "delivered"];
const LABEL = {
  requested: "Looking for a driver",
  offered: "Offered to a driver",
  assigned: "Driver on the way",
  driver_arrived: "Driver at pickup",
  picked_up: "Parcel picked up",
  delivered: "Delivered",
  cancelled: "Cancelled",
  expired: "No driver found",
};

// ``shareToken``: the page opened from a tracking link, read-only, for that one booking.
export default function Customer({ session, bookingId, center, shareToken }) {
  const token = shareToken ?? session.token;
  const readOnly = Boolean(shareToken);
  const [shared, setShared] = useState(null);
  const [points, setPoints] = useState([]); // [pickup, dropoff] as {lat, lon}
  const [booking, setBooking] = useState(null);
  const [timeline, setTimeline] = useState([]);
  const [eta, setEta] = useState(null);
  const [error, setError] = useState(null);
  const [mine, setMine] = useState([]);
  const layers = useRef(null);
  const driverMarker = useRef(null);
  const [mapRef, map] = useLeaflet((ll) => {
    if (readOnly) return;
    if (booking && !["delivered", "cancelled", "expired"].includes(booking.status)) return;
    setPoints((p) => (p.length >= 2 ? [{ lat: ll.lat, lon: ll.lng }] : [...p, { lat: ll.lat, lon: ll.lng }]));
    if (booking) {
      setBooking(null);
      setTimeline([]);
      setEta(null);
    }
  }, center);

  useEffect(() => {
    if (map) layers.current = L.layerGroup().addTo(map);
  }, [map]);

  // Open a booking by id (a link), or the list of my bookings.
  useEffect(() => {
    if (bookingId) {
      api(`/v1/bookings/${bookingId}`, { token })
        .then((b) => {
          setBooking(b);
          setPoints([b.pickup, b.dropoff]);
          setTimeline([{ status: b.status, at: b.updated_at ?? b.created_at }]);
        })
        .catch((e) => setError(e instanceof ApiError && e.status === 404 ? "No such booking (or not yours)." : e.message));
    }
    if (!readOnly)
      api("/v1/bookings?limit=10", { token })
        .then((p) => setMine(p.items))
        .catch(() => {});
  }, [bookingId, token, readOnly]);

  useEffect(() => {
    if (!layers.current) return;
    layers.current.clearLayers();
    driverMarker.current = null;
    if (points[0]) pin([points[0].lat, points[0].lon], "pickup", "#22c55e").addTo(layers.current);
    if (points[1]) pin([points[1].lat, points[1].lon], "dropoff", "#ef4444").addTo(layers.current);
  }, [points, map]);

  const connected = useNotifications(token, (msg) => {
    if (!booking || msg.booking_id !== booking.booking_id) return;
    if (msg.type === "eta.update") {
      setEta({ s: msg.eta_s, phase: msg.phase, distance: msg.distance_m });
      if (msg.lat != null && layers.current) {
        if (!driverMarker.current) {
          driverMarker.current = L.circleMarker([msg.lat, msg.lon], { radius: 7, color: "#0f172a", fillColor: "#ea580c", fillOpacity: 1, className: "my-driver" }).addTo(
            layers.current,
          );
        }
        driverMarker.current.setLatLng([msg.lat, msg.lon]);
      }
    } else if (msg.type?.startsWith("booking.") && msg.version > (booking.version ?? -1)) {
      setBooking((b) => ({ ...b, ...msg }));
      setTimeline((t) => [...t, { status: msg.status, at: msg.at, reason: msg.reason }]);
    }
  });

  const book = async () => {
    setError(null);
    try {
      const b = await api("/v1/bookings", {
        token,
        method: "POST",
        body: { pickup: points[0], dropoff: points[1], parcel_size: "small" },
        headers: { "Idempotency-Key": crypto.randomUUID() },
      });
      setBooking(b);
      setTimeline([{ status: b.status, at: b.created_at }]);
      history.replaceState(null, "", `#/customer?booking=${b.booking_id}`);
    } catch (e) {
      setError(e.message);
    }
  };
  const share = async () => {
    try {
      const r = await api(`/v1/bookings/${booking.booking_id}/share`, { token, method: "POST" });
      setShared(`${location.origin}${r.path}`);
    } catch (e) {
      setError(e.message);
    }
  };
  const cancel = async () => {
    try {
      await api(`/v1/bookings/${booking.booking_id}/cancel`, { token, method: "POST", body: {} });
    } catch (e) {
      setError(e.message);
    }
  };

  const status = booking?.status;
  // An estimate is news only while it is about the leg being driven.
  const etaNow = eta && ((status === "assigned" && eta.phase === "to_pickup") || (status === "picked_up" && eta.phase === "to_dropoff")) ? eta : null;
  return (
    <div className="flex h-full">
      <div ref={mapRef} className="h-full flex-1" data-testid="map" />
      <aside className="flex w-96 flex-col gap-3 overflow-y-auto bg-white p-4 text-sm">
        <div className="flex items-center">
          <h2 className="text-base font-semibold">{readOnly ? "Tracking a delivery" : "Send a parcel"}</h2>
          <span className={`ml-auto rounded px-2 ${connected ? "bg-emerald-600 text-white" : "bg-red-600 text-white"}`}>{connected ? "live" : "reconnecting"}</span>
        </div>
        {!booking && !readOnly && (
          <>
            <p>{points.length === 0 ? "Click the map where we pick the parcel up." : points.length === 1 ? "Now click where it goes." : "Ready to book."}</p>
            <button className="rounded bg-indigo-600 py-2 text-white disabled:opacity-40" disabled={points.length < 2} onClick={book} data-testid="book">
              Book delivery
            </button>
          </>
        )}
        {error && (
          <p className="rounded bg-red-50 p-2 text-red-700" role="alert" data-testid="error">
            {error}
          </p>
        )}
        {booking && (
          <div className="flex flex-col gap-2" data-testid="tracking">
            <div className="text-lg font-semibold" data-testid="status" data-status={status}>
              {LABEL[status] ?? status}
            </div>
            {booking.reason && <div className="text-slate-600">{booking.reason}</div>}
            <div data-testid="eta" data-eta={etaNow?.s ?? ""}>
              {etaNow
                ? `${etaNow.phase === "to_dropoff" ? "Delivery" : "Pickup"} in ${fmtDuration(etaNow.s)} (${(etaNow.distance / 1000).toFixed(1)} km)`
                : status === "requested" || status === "offered"
                  ? "ETA once a driver is assigned"
                  : ""}
            </div>
            <ol className="border-l-2 border-slate-200 pl-3">
              {STEPS.map((s) => {
                const hit = timeline.find((t) => t.status === s);
                return (
                  <li key={s} className={hit ? "text-slate-900" : "text-slate-400"}>
                    {LABEL[s]} {hit?.at ? <span className="text-xs text-slate-500">{new Date(hit.at).toLocaleTimeString()}</span> : null}
                  </li>
                );
              })}
            </ol>
            {!readOnly && ["requested", "offered", "assigned", "driver_arrived"].includes(status) && (
              <button className="rounded border border-red-300 py-1 text-red-700" onClick={cancel}>
                Cancel
              </button>
            )}
            {!readOnly && (
              <div className="flex flex-col gap-1">
                <button className="rounded border border-indigo-300 py-1 text-indigo-700" onClick={share} data-testid="share">
                  Share a tracking link
                </button>
                {shared && (
                  <input readOnly className="rounded border px-1 text-xs" value={shared} data-testid="share-link" onFocus={(e) => e.target.select()} />
                )}
              </div>
            )}
          </div>
        )}
        {!readOnly && mine.length > 0 && (
          <>
            <h3 className="mt-4 font-semibold">My recent deliveries</h3>
            <ul>
              {mine.map((b) => (
                <li key={b.booking_id}>
                  <a className="text-indigo-700" href={`#/customer?booking=${b.booking_id}`}>
                    {b.booking_id.slice(0, 8)}
                  </a>{" "}
                  {b.status}
                </li>
              ))}
            </ul>
          </>
        )}
      </aside>
    </div>
  );
}
