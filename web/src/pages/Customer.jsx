// Book by clicking pickup then dropoff; then watch the driver approach, the ETA fall and the status move.
import { useEffect, useRef, useState } from "react";
import L from "leaflet";
import { ApiError, bearer, client, fmtDuration, isBookingNotice, ok, reason, useNotifications } from "../api.js";
import { pin, useLeaflet } from "../Map.jsx";

const STEPS = ["requested", "offered", "assigned", "driver_arrived", "picked_up", "delivered"];
/** @type {Record<string, string>} */
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

/** @typedef {import("../api.js").Booking} Booking */
/** @typedef {import("../api.js").GeoPoint} GeoPoint */

// ``shareToken``: the page opened from a tracking link, read-only, for that one booking.
/** @param {{ session: import("../api.js").Session | null, bookingId: string | null, center: string | null, shareToken?: string | null }} props */
export default function Customer({ session, bookingId, center, shareToken }) {
  const token = shareToken ?? session?.token;
  const readOnly = Boolean(shareToken);
  const [shared, setShared] = useState(/** @type {string | null} */ (null));
  const [points, setPoints] = useState(/** @type {GeoPoint[]} */ ([])); // [pickup, dropoff]
  const [booking, setBooking] = useState(/** @type {Booking | null} */ (null));
  const [timeline, setTimeline] = useState(/** @type {{ status: string, at?: string | null, reason?: string | null }[]} */ ([]));
  const [eta, setEta] = useState(/** @type {{ s: number, phase: string, distance: number } | null} */ (null));
  const [error, setError] = useState(/** @type {string | null} */ (null));
  const [mine, setMine] = useState(/** @type {Booking[]} */ ([]));
  const layers = useRef(/** @type {L.LayerGroup | null} */ (null));
  const driverMarker = useRef(/** @type {L.CircleMarker | null} */ (null));
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
      ok(client.GET("/v1/bookings/{booking_id}", { params: { path: { booking_id: bookingId } }, headers: bearer(token) }))
        .then(async (b) => {
          setBooking(b);
          setPoints(b.pickup && b.dropoff ? [b.pickup, b.dropoff] : []);
          // The whole timeline of a reopened booking (the store trails it by a moment: else its state now).
          const path = { booking_id: bookingId };
          const events = await ok(client.GET("/v1/bookings/{booking_id}/events", { params: { path }, headers: bearer(token) })).catch(() => []);
          setTimeline(events.length ? events.map((e) => ({ status: e.status, at: e.occurred_at, reason: e.reason })) : [{ status: b.status, at: b.updated_at ?? b.created_at }]);
        })
        .catch((e) => setError(e instanceof ApiError && e.status === 404 ? "No such booking (or not yours)." : reason(e)));
    }
    if (!readOnly)
      ok(client.GET("/v1/bookings", { params: { query: { limit: 10 } }, headers: bearer(token) }))
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
    if (!booking || !("booking_id" in msg) || msg.booking_id !== booking.booking_id) return;
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
    } else if (isBookingNotice(msg) && msg.version > (booking.version ?? -1)) {
      setBooking((b) => (b ? { ...b, ...msg } : b));
      setTimeline((t) => [...t, { status: msg.status, at: msg.at, reason: msg.reason }]);
    }
  });

  const book = async () => {
    setError(null);
    try {
      const answer = await ok(
        client.POST("/v1/bookings", {
          body: { pickup: points[0], dropoff: points[1], parcel_size: "small" },
          headers: { ...bearer(token), "Idempotency-Key": crypto.randomUUID() },
        }),
      );
      // 202: the command is in Kafka but the bookings agent has not answered yet; read it back.
      const b = answer.status === "pending" ? await applied(answer.booking_id) : answer;
      setBooking(b);
      setTimeline([{ status: b.status, at: b.created_at }]);
      history.replaceState(null, "", `#/customer?booking=${b.booking_id}`);
    } catch (e) {
      setError(reason(e));
    }
  };
  /** The booking once the agent has applied its command (404 until then). @param {string} id */
  const applied = async (id) => {
    for (let i = 0; ; i++) {
      try {
        return await ok(client.GET("/v1/bookings/{booking_id}", { params: { path: { booking_id: id } }, headers: bearer(token) }));
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 404) || i >= 20) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  };
  const share = async () => {
    try {
      if (!booking) return;
      const r = await ok(client.POST("/v1/bookings/{booking_id}/share", { params: { path: { booking_id: booking.booking_id } }, headers: bearer(token) }));
      setShared(`${location.origin}${r.path}`);
    } catch (e) {
      setError(reason(e));
    }
  };
  const cancel = async () => {
    try {
      if (!booking) return;
      await ok(client.POST("/v1/bookings/{booking_id}/cancel", { params: { path: { booking_id: booking.booking_id } }, body: {}, headers: bearer(token) }));
    } catch (e) {
      setError(reason(e));
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
              {LABEL[booking.status] ?? booking.status}
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
            {!readOnly && ["requested", "offered", "assigned", "driver_arrived"].includes(booking.status) && (
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
