# Test fixture: a server for seed 000, whose code the seed does not include, written
# from its description: one client at a time; the client's JSON object
# {"client_name", "client_number"} in one recv(1024); if the number is in 1..100, reply
# {"server_name", "server_number", "sum"} and close the connection; otherwise log the
# seed's warning and terminate. Like the seed's, it handles no malformed input.
# It binds 127.0.0.1 and takes its port from HANDOUT_PORT. Not socklab code.

import json
import os
import random
import socket

HOST = "127.0.0.1"
PORT = int(os.environ["HANDOUT_PORT"])
SERVER_NAME = "Amirreza Yarahmadi Server"


def handle_client(conn):
    print("[DEBUG] [handle_client]: Message recieved from client")
    message = json.loads(conn.recv(1024).decode("utf-8"))
    client_name = message["client_name"]
    client_number = message["client_number"]
    if not 1 <= client_number <= 100:
        print(f"[WARNING] [handle client]: Client int out of range: {client_number}. "
              "Terminating the server.")
        conn.close()
        return False
    server_number = random.randint(1, 100)
    total = client_number + server_number
    print(f"[INFO] [handle_client]: Client Name: {client_name} | Server Name: {SERVER_NAME}")
    print(f"[INFO] [handle_client]: Client Number: {client_number} | "
          f"Server Number: {server_number} | Sum: {total}")
    reply = {"server_name": SERVER_NAME, "server_number": server_number, "sum": total}
    print("[DEBUG] [handle_client]: Sending client response")
    conn.sendall(json.dumps(reply).encode("utf-8"))
    conn.close()
    print("[DEBUG] [handle_client]: Client connection closed")
    return True


def start_server():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((HOST, PORT))
    server.listen()
    print(f"[INFO] [start_server]: {SERVER_NAME} started and listening on {HOST}:{PORT}")
    while True:
        conn, addr = server.accept()
        print(f"[DEBUG] [start_server]: Connection accepted from {addr}")
        if not handle_client(conn):
            break
    server.close()


start_server()
