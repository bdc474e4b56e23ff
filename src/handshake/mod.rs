//! Client request checks, the backend request, and the backend response (to be written).
